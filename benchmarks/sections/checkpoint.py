"""Checkpoint cost on the 100-model state (an in-process probe), then kill -9 and a
restart with a backlog."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import time
from pathlib import Path

from benchmarks.common import (
    LIVE_PER_MS,
    Sizes,
    Table,
    budget_s,
    count,
    generate,
    many_models_config,
    mib,
    ms,
    now_ms,
    pinned_daemon,
    proc_rchar,
    proc_status_kib,
    rate,
    run_child,
    running,
    wait_count,
    write_config,
)


def checkpoint_probe(config_path: str, repeats: int = 5) -> dict:
    """Loads the config's logs in-process the way the daemon does (its Reader and
    Aggregator, wall clock), then times the daemon's own checkpoint step, which the main
    loop waits for: aggregator state -> durable file (fsync, rename) -> the snapshot that
    republishes /metrics (timed apart). Then a fresh daemon's restore of that file."""
    from monitor.shell.config import load_config
    from monitor.shell.daemon import Daemon, Reader

    config = load_config(config_path)
    assert config.state_dir is not None
    os.makedirs(config.state_dir, exist_ok=True)
    daemon = Daemon(config, None)
    daemon.reader = Reader(config, daemon.aggregator)
    started = time.perf_counter()
    while daemon.reader.step(time.time()):
        pass
    load_s = time.perf_counter() - started
    lines = sum(sum(c.lines.values()) for c in daemon.aggregator.counters.values())
    snapshot = daemon.aggregator.snapshot
    snapshots: list[float] = []

    def timed_snapshot() -> object:
        t = time.perf_counter()
        try:
            return snapshot()
        finally:
            snapshots.append(time.perf_counter() - t)

    daemon.aggregator.snapshot = timed_snapshot  # type: ignore[method-assign]
    steps = [daemon.write_checkpoint() for _ in range(repeats)]
    writes = [step - snap for step, snap in zip(steps, snapshots)]
    size = os.path.getsize(daemon.path)
    daemon.reader.close()
    fresh = Daemon(config, None)
    t = time.perf_counter()
    fresh.restore()
    restore_s = time.perf_counter() - t
    return {"lines": lines, "load_s": load_s, "write_s": writes, "snapshot_s": snapshots,
            "bytes": size, "restore_s": restore_s,
            "rss_kib": proc_status_kib(os.getpid(), "VmHWM")}



def run(work: Path, sizes: Sizes, table: Table, replay_rate: float | None) -> None:
    """Checkpoint cost on the 100-model state, then a kill -9 + restart on a backlog."""
    folder = work / "checkpoint"
    (folder / "logs").mkdir(parents=True)
    n = sizes.memory[0]
    log = folder / "logs" / "log.jsonl"
    generate(log, n, 10, models=100, seed=41, t0_ms=now_ms() - n // LIVE_PER_MS,
             per_ms=LIVE_PER_MS)
    config = write_config(folder / "probe.yaml",
                          many_models_config(log, folder / "probe-state"))
    probe = run_child(["--checkpoint-probe", str(config)], budget_s(n))
    write_med = statistics.median(probe["write_s"])
    snap_med = statistics.median(probe["snapshot_s"])
    table.add(f"checkpoint write, 100 models x 10 classes x 3 windows (median of "
              f"{len(probe['write_s'])})", f"{ms(write_med)} ({probe['bytes'] / 1e6:,.1f} MB)",
              "< 50 ms", write_med < 0.05)
    table.add("snapshot for /metrics after each checkpoint (median)", ms(snap_med))
    table.add("checkpoint restore at start-up (read, verify, load)", ms(probe["restore_s"]))
    log.unlink()

    # kill -9 and restart with a backlog: resumes from the checkpoint at replay speed?
    first, backlog = sizes.restart_initial, sizes.restart_backlog
    start_ms = now_ms() - (first + backlog) // LIVE_PER_MS
    generate(log, first, 10, models=100, seed=42, t0_ms=start_ms, per_ms=LIVE_PER_MS)
    daemon = pinned_daemon(folder, many_models_config(folder / "logs" / "*.jsonl", folder / "state",
                                               checkpoint_interval="1s", poll_interval="1s"))
    with running(daemon):
        wait_count(daemon, first, budget_s(first))  # /metrics is never ahead of the checkpoint
        daemon.kill()
    staged = folder / "backlog.staged"
    generate(staged, backlog, 10, models=100, seed=43, t0_ms=start_ms, per_ms=LIVE_PER_MS,
             first_id=first)
    with open(log, "ab") as out, open(staged, "rb") as src:
        shutil.copyfileobj(src, out, 16 << 20)
    staged.unlink()
    expected = first + backlog
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        daemon.start(wait_ready=False)
        stack.callback(daemon.stop)
        # The loop reads only once /readyz answers (state restored, server up): the
        # catch-up runs from just before the first 200 to the last block read, found
        # in /proc/<pid>/io once reads have stopped and /metrics shows every line.
        ready_at = started
        while not daemon.ready():
            ready_at = time.monotonic()
            if ready_at - started > 120:
                raise TimeoutError("daemon not ready within 120s of its restart")
            time.sleep(0.005)
        last_read, seen, checked = ready_at, proc_rchar(daemon.pid), 0.0
        deadline = ready_at + budget_s(backlog)
        while True:
            time.sleep(0.002)
            now, rchar = time.monotonic(), proc_rchar(daemon.pid)
            if rchar - seen >= 4096:  # a block of the log, not a 1 KiB identity peek
                last_read = now
            seen = rchar
            if now - last_read >= 1.5 and now - checked >= 0.5:
                checked = now
                if count(daemon) == expected:
                    break
            if now > deadline:
                raise TimeoutError(f"restart catch-up of {backlog:,} lines not within "
                                   f"{budget_s(backlog):.0f}s")
        catch_up_s = last_read - ready_at
        ready_s = ready_at - started
        total_s = last_read - started
        rss = proc_status_kib(daemon.pid, "VmRSS")
        hwm = proc_status_kib(daemon.pid, "VmHWM")
    versus = f", {backlog / catch_up_s / replay_rate:.0%} of replay" if replay_rate else ""
    table.add(f"restart after kill -9: {backlog:,}-line backlog catch-up",
              f"{rate(backlog, catch_up_s)}{versus}", "~ replay speed",
              backlog / catch_up_s >= 0.8 * replay_rate if replay_rate else None)
    table.add("restart: ready / caught up, from spawn (exactly once)",
              f"{ms(ready_s)} / {total_s:.2f} s ({expected:,} counted of {expected:,})")
    table.add("daemon RSS after restart catch-up, 100 models x 10 classes (now / peak)",
              f"{mib(rss)} / {mib(hwm)}", "< 150 MiB", hwm < 150 * 1024)
    shutil.rmtree(folder)
