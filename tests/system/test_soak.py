"""Soak: ten minutes of a real daemon under steady writing, rotation every 20 s (rename and
create, then copytruncate, in turn) with the rotated files kept in the glob and all but the
newest few deleted (logrotate's `rotate N`: deleted inodes are reused, old copies' heads
forgotten), two SIGHUP reloads and two kill -9 restarts, scraped every second. Counts exact
before every deletion and at the end; memory and descriptors flat after warm-up.

SOAK_S shortens it for a local run (the events keep their share of the time)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.system.conftest import DaemonProcess, Writer, model_config, source, value
from tests.waiting import wait_until

SOAK_S = float(os.environ.get("SOAK_S", "600"))
ROTATE_EVERY_S = 20.0
KEEP_ROTATED = 5  # older rotated files are deleted
RSS_GROWTH_BOUND_KIB = 24 * 1024
FD_GROWTH_BOUND = 8


def proc_figures(pid: int) -> tuple[int, int]:
    """Resident memory (KiB) and open descriptors of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match[1]), len(os.listdir(f"/proc/{pid}/fd"))


def complete_ids(path: Path) -> set[int]:
    """Sequence numbers of the whole, valid lines of a log (what must be counted)."""
    ids = set()
    for line in path.read_bytes().split(b"\n")[:-1]:
        try:
            ids.add(int(json.loads(line)["id"].removeprefix("r-")))
        except (ValueError, KeyError):
            continue  # the tail of a line cut by copytruncate: rejected, not counted
    return ids


def predictions(d: DaemonProcess) -> float:
    return d.value("model_drift_predictions_total", model="fraud") or 0.0


def delete_once_counted(d: DaemonProcess, logs: Path, old: list[Path], deleted: set[int]) -> None:
    """Delete `old` rotated files once every complete line there is (in the logs, and in
    files `deleted` before, whose ids it holds) is counted, exactly: a line deleted before
    it is read would be lost, not miscounted. The caller holds the writer still."""
    there = deleted.union(*(complete_ids(p) for p in logs.glob("p*.jsonl")))
    wait_until(lambda: predictions(d) >= len(there), 60, interval_s=0.2,
               what=f"{len(there)} predictions counted before a deletion")
    assert predictions(d) == len(there), f"{predictions(d)} counted of {len(there)} lines"
    for path in old:
        deleted |= complete_ids(path)
        path.unlink()


@pytest.mark.slow
def test_soak_counts_exactly_with_flat_memory_and_descriptors(daemon_factory, logs):
    active = logs / "p.jsonl"
    d = daemon_factory({"sources": [source(logs / "p*.jsonl")],
                        "models": {"fraud": model_config()}})
    writer = Writer(active)
    lock = threading.Lock()
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            with lock:
                writer.write(4)
            time.sleep(0.01)

    d.start(wait_ready=False)
    wait_until(d.ready, 90, what="the daemon ready")
    assert d.proc is not None
    thread = threading.Thread(target=write)
    thread.start()
    started = time.monotonic()
    events = {0.08: "kill", 0.16: "kill", 0.24: "hup", 0.32: "hup"}
    warm_up_end = 0.45 * SOAK_S
    rotations, next_rotation = 0, ROTATE_EVERY_S
    deleted: set[int] = set()  # ids of the lines in deleted files, all counted first
    figures: list[tuple[float, int, int, int]] = []  # (t, pid, rss KiB, fds)
    last_count = 0.0
    try:
        while (t := time.monotonic() - started) < SOAK_S:
            due = [share for share in events if t >= share * SOAK_S]
            for share in due:
                kind = events.pop(share)
                if kind == "kill":
                    d.kill()
                    d.start(wait_ready=False)
                    # Generous: a restart imports numpy and friends on a shared machine.
                    wait_until(d.ready, 90, what="the restarted daemon ready")
                else:
                    d.config["models"]["fraud"]["min_samples"] += 1
                    d.write_config(d.config)
                    d.send(signal.SIGHUP)
            if t >= next_rotation:
                rotations += 1
                next_rotation += ROTATE_EVERY_S
                rotated = logs / f"p.{rotations:04d}.jsonl"
                if rotations % 2:
                    os.rename(active, rotated)
                    with lock:
                        writer.reopen()
                else:
                    # copytruncate, as logrotate does it: the lines written between the
                    # copy and the truncation are lost, in both files.
                    shutil.copyfile(active, rotated)
                    os.truncate(active, 0)
                old = sorted(logs.glob("p.*.jsonl"))[:-KEEP_ROTATED]
                if old:
                    with lock:
                        delete_once_counted(d, logs, old, deleted)
            samples = d.scrape()
            count = value(samples, "model_drift_predictions_total", model="fraud") or 0.0
            assert count >= last_count, f"counter went back from {last_count} to {count}"
            last_count = count
            figures.append((t, d.proc.pid, *proc_figures(d.proc.pid)))
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started - t)))
    finally:
        stop.set()
        thread.join(timeout=10)
        writer.close()
    expected = deleted.union(*(complete_ids(p) for p in logs.glob("p*.jsonl")))
    wait_until(lambda: predictions(d) == len(expected), 60, interval_s=0.5,
               what=f"{len(expected)} predictions counted (got {predictions(d)})")
    samples = d.scrape()
    for index, cls in enumerate(("legit", "fraud")):
        assert value(samples, "model_drift_labels_total", model="fraud", **{"class": cls}) == (
            sum(1 for i in expected if i % 2 == index)), cls
    assert d.stop() == 0

    final = [f for f in figures if f[1] == d.proc.pid and f[0] >= warm_up_end]
    assert len(final) >= 0.4 * SOAK_S
    rss = [f[2] for f in final]
    fds = [f[3] for f in final]
    print(f"\nsoak: {SOAK_S:.0f}s, {writer.i} lines written, {len(expected)} kept, "
          f"{len(deleted)} of them in deleted files, "
          f"{rotations} rotations; after warm-up (t >= {warm_up_end:.0f}s): "
          f"RSS {rss[0] / 1024:.1f} -> {rss[-1] / 1024:.1f} MiB (max {max(rss) / 1024:.1f}), "
          f"fds {fds[0]} -> {fds[-1]} (min {min(fds)}, max {max(fds)})")
    assert max(rss) - rss[0] <= RSS_GROWTH_BOUND_KIB, f"RSS grew {rss[0]} -> {max(rss)} KiB"
    assert max(fds) - min(fds) <= FD_GROWTH_BOUND, f"descriptors {min(fds)} -> {max(fds)}"
    errors = [line for line in d.log().splitlines()
              if " ERROR " in line or "Traceback" in line or " CRITICAL " in line]
    assert errors == []
    warnings = {re.sub(r"\S+=\S+", "", line.split(" WARNING ", 1)[1]).strip()
                for line in d.log().splitlines() if " WARNING " in line}
    # The tail of a line cut by copytruncate is a rejected line; nothing else warns.
    assert warnings <= {"monitor.shell.daemon: line rejected"}, warnings
