"""Never lose or double-count a line: kill -9, rotation, truncation, reload, bad files."""

from __future__ import annotations

import os
import random
import shutil
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.system.conftest import (
    Writer,
    append,
    assert_counted_exactly,
    model_config,
    parse_metrics,
    run_cli,
    source,
    value,
    wait_until,
    writing,
)


def config_for(pattern: Path, **extra: object) -> dict:
    return {"sources": [source(pattern)], "models": {"fraud": model_config()}, **extra}


@pytest.mark.slow
def test_kill_9_at_random_moments_neither_loses_nor_doubles_a_line(daemon_factory, logs):
    rng = random.Random(11)
    writer = Writer(logs / "app.jsonl")
    d = daemon_factory(config_for(logs / "*.jsonl"))
    with writing(writer, lambda: rng.randint(1, 200), lambda: rng.uniform(0, 0.02)):
        for _ in range(5):
            d.start()
            time.sleep(rng.uniform(0.2, 1.5))
            d.kill()
    d.start()
    assert_counted_exactly(d, writer)
    assert d.stop() == 0


@pytest.mark.slow
def test_counters_scraped_every_100ms_never_decrease_across_kill_9(daemon_factory, logs):
    writer = Writer(logs / "app.jsonl")
    stop = threading.Event()
    d = daemon_factory(config_for(logs / "*.jsonl"))
    seen: dict = {}
    drops: list = []

    def scrape() -> None:
        while not stop.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{d.port}/metrics", timeout=1) as r:
                    samples = parse_metrics(r.read().decode())
            except OSError:
                samples = {}
            for key, v in samples.items():
                # The daemon's own counters: process_* and python_gc_* are the process's,
                # restart at 0 with it, and Prometheus sees the new process_start_time.
                if key[0].endswith("_total") and key[0].startswith(("model_drift_", "drift_monitor_")):
                    if v < seen.get(key, 0):
                        drops.append((key, seen[key], v))
                    seen[key] = v
            time.sleep(0.1)

    scraper = threading.Thread(target=scrape)
    d.start()
    scraper.start()
    try:
        with writing(writer, lambda: 50, lambda: 0.01):
            for _ in range(4):
                time.sleep(1.0)
                d.kill()
                d.start()
    finally:
        stop.set()
        scraper.join(timeout=10)
    assert_counted_exactly(d, writer)
    assert not drops, drops[:5]
    assert seen, "no scrape succeeded"
    assert d.stop() == 0


@pytest.mark.slow
def test_rename_and_create_rotation_under_continuous_writing_counts_every_line_once(
        daemon_factory, logs):
    writer = Writer(logs / "app.jsonl")
    d = daemon_factory(config_for(logs / "app.jsonl")).start()
    for n in range(1, 7):
        writer.write(300)
        time.sleep(0.4)
        os.rename(logs / "app.jsonl", logs / f"app.jsonl.{n}")
        writer.write(25)  # a logger writes on through its old descriptor for a moment
        writer.reopen()
        writer.write(10)
        time.sleep(0.4)
        if n == 3:  # and once while the daemon is down: found again by inode
            assert d.stop() == 0
            os.rename(logs / "app.jsonl", logs / "app.jsonl.3b")
            writer.write(5)
            writer.reopen()
            d.start()
    writer.close()
    assert_counted_exactly(d, writer)
    assert d.stop() == 0


def _copytruncate(writer: Writer, logs: Path, n: int) -> None:
    """logrotate's copytruncate, with the writer paused (no line falls in between)."""
    shutil.copyfile(logs / "app.jsonl", logs / f"app.jsonl.{n}")
    os.truncate(logs / "app.jsonl", 0)


@pytest.mark.slow
def test_copytruncate_with_copies_in_the_glob_counts_every_line_once(daemon_factory, logs):
    writer = Writer(logs / "app.jsonl")
    d = daemon_factory(config_for(logs / "app.jsonl*")).start()
    for n in range(1, 6):
        writer.write(200 + 37 * n)  # the daemon may or may not have read these yet
        _copytruncate(writer, logs, n)
        time.sleep(0.5)
    writer.write(100)
    writer.close()
    assert_counted_exactly(d, writer)
    assert d.stop() == 0


@pytest.mark.slow
def test_copytruncate_outside_the_glob_never_double_counts(daemon_factory, logs):
    writer = Writer(logs / "app.jsonl")
    d = daemon_factory(config_for(logs / "app.jsonl")).start()
    for n in range(1, 5):
        writer.write(300)
        wait_until(lambda: d.value("model_drift_predictions_total", model="fraud") == writer.total, 10)
        _copytruncate(writer, logs, n)
        writer.write(20)
        time.sleep(0.5)
    writer.close()
    # The daemon read each generation to its end before the cut: nothing is lost either.
    assert_counted_exactly(d, writer)
    assert d.stop() == 0


def test_partial_line_waits_across_a_restart(daemon_factory, logs):
    path = logs / "app.jsonl"
    d = daemon_factory(config_for(path)).start()
    line = b'{"probs": [0.25, 0.75], "label": 1}'
    append(path, [line])
    with open(path, "ab") as fh:
        fh.write(line[:10])
    d.wait_value("model_drift_predictions_total", 1, model="fraud")
    assert d.stop() == 0
    d.start()
    with open(path, "ab") as fh:
        fh.write(line[10:] + b"\n")
    d.wait_value("model_drift_predictions_total", 2, model="fraud")
    # A marker line after it: once it counts, any line made of the halves would have too.
    append(path, [line])
    d.wait_value("model_drift_predictions_total", 3, model="fraud")
    samples = d.scrape()
    assert value(samples, "drift_monitor_lines_total", source="preds", status="rejected") == 0
    assert value(samples, "model_drift_predictions_total", model="fraud") == 3
    assert d.stop() == 0


def test_counters_continue_across_restarts(daemon_factory, logs):
    path = logs / "app.jsonl"
    append(path, [{"probs": [0.5, 0.5], "label": 0}] * 5 + ["garbage"])
    d = daemon_factory(config_for(path)).start()
    d.wait_value("model_drift_predictions_total", 5, model="fraud")
    assert d.stop() == 0
    append(path, [{"probs": [0.5, 0.5], "label": 1}] * 3)
    d.start()
    d.wait_value("model_drift_predictions_total", 8, model="fraud")
    samples = d.scrape()
    assert value(samples, "drift_monitor_lines_total", source="preds", status="rejected") == 1
    assert value(samples, "drift_monitor_lines_total", source="preds", status="ok") == 8
    assert value(samples, "model_drift_labels_total", model="fraud", **{"class": "legit"}) == 5
    assert d.stop() == 0


def test_corrupt_checkpoint_is_reported_moved_aside_and_the_daemon_starts(daemon_factory, logs):
    path = logs / "app.jsonl"
    append(path, [{"probs": [0.5, 0.5]}] * 4)
    d = daemon_factory(config_for(path))
    state = Path(d.config["state_dir"])
    state.mkdir()
    (state / "checkpoint.npz").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    d.start()
    d.wait_value("model_drift_predictions_total", 4, model="fraud")
    assert "checkpoint unreadable" in d.log()
    assert [p for p in state.iterdir() if ".corrupt-" in p.name]
    assert "Traceback" not in d.log()
    assert d.stop() == 0
    d.start()  # and the fresh checkpoint it wrote is good
    d.wait_value("model_drift_predictions_total", 4, model="fraud")
    assert d.stop() == 0


def test_unusable_state_dir_exits_1_with_one_clear_line(tmp_path, logs):
    import yaml

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**config_for(logs / "*.jsonl"),
                                      "state_dir": str(blocker / "state")}))
    out = run_cli("run", "--config", str(config))
    assert out.returncode == 1
    assert "state_dir" in out.stderr and "Traceback" not in out.stderr


def test_file_deleted_while_being_read_is_read_to_its_end(daemon_factory, logs):
    path = logs / "big.jsonl"
    writer = Writer(path, pad=200)
    writer.write(100_000)
    writer.close()
    d = daemon_factory(config_for(logs / "*.jsonl")).start(wait_ready=False)

    def opened() -> bool:
        fds = f"/proc/{d.proc.pid}/fd"
        for fd in os.listdir(fds):
            try:
                if os.readlink(os.path.join(fds, fd)) == str(path):
                    return True
            except FileNotFoundError:  # closed while we looked
                continue
        return False

    wait_until(opened, 20, interval_s=0.001)
    os.unlink(path)
    wait_until(d.ready, 20)
    assert_counted_exactly(d, writer, timeout_s=60)
    assert d.stop() == 0


@pytest.mark.slow
def test_100mb_line_is_skipped_without_holding_it_in_memory(daemon_factory, logs):
    path = logs / "app.jsonl"
    append(path, [{"probs": [0.5, 0.5], "label": 0}])
    with open(path, "ab") as fh:
        chunk = b"x" * (1 << 20)
        for _ in range(100):
            fh.write(chunk)
        fh.write(b"\n")
    append(path, [{"probs": [0.5, 0.5], "label": 1}])
    d = daemon_factory(config_for(path)).start()
    d.wait_value("model_drift_predictions_total", 2, timeout_s=60, model="fraud")
    assert d.value("drift_monitor_rejected_lines_total", source="preds", reason="too_long") == 1
    status = Path(f"/proc/{d.proc.pid}/status").read_text()
    peak_kib = int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1])
    assert peak_kib < 150 * 1024, f"peak RSS {peak_kib} KiB"
    assert d.stop() == 0


def test_binary_garbage_is_rejected_and_lines_after_it_count(daemon_factory, logs):
    path = logs / "app.jsonl"
    rng = random.Random(3)
    append(path, [{"probs": [0.5, 0.5], "label": 0}])
    with open(path, "ab") as fh:
        fh.write(bytes(rng.randrange(256) for _ in range(20000)) + b"\n")
    append(path, [{"probs": [0.5, 0.5], "label": 1}])
    d = daemon_factory(config_for(path)).start()
    d.wait_value("model_drift_predictions_total", 2, model="fraud")
    assert d.value("drift_monitor_lines_total", source="preds", status="rejected") >= 1
    assert "Traceback" not in d.log()
    assert d.stop() == 0


def test_file_reappearing_with_known_content_is_not_read_twice(daemon_factory, logs, tmp_path):
    path = logs / "app.jsonl"
    writer = Writer(path)
    writer.write(100)
    writer.close()
    d = daemon_factory(config_for(logs / "*.jsonl")).start()
    assert_counted_exactly(d, writer)
    outside = tmp_path / "elsewhere.jsonl"
    shutil.move(path, outside)
    time.sleep(0.5)  # pacing: the copy appears while the moved file may still be held open
    shutil.copyfile(outside, logs / "restored.jsonl")  # a new inode, the same content
    # A marker file with its own content, made after the copy: the poll that finds it
    # finds the copy too, so once the marker counts, a copy read twice would show.
    append(logs / "marker-1.jsonl", [{"id": "marker-1", "probs": [0.5, 0.5]}])
    d.wait_value("model_drift_predictions_total", writer.total + 1, model="fraud")
    assert d.stop() == 0
    shutil.copyfile(outside, logs / "again.jsonl")  # and while the daemon is down
    append(logs / "marker-2.jsonl", [{"id": "marker-2", "probs": [0.5, 0.5]}])
    d.start()
    d.wait_value("model_drift_predictions_total", writer.total + 2, model="fraud")
    assert d.value("model_drift_predictions_total", model="fraud") == writer.total + 2
    assert d.stop() == 0


def test_start_at_end_skips_existing_lines_only(daemon_factory, logs):
    path = logs / "app.jsonl"
    append(path, [{"probs": [0.5, 0.5]}] * 10)
    with open(path, "ab") as fh:
        fh.write(b'{"probs": [0.5,')  # a partial line: starting at its middle would be garbage
    d = daemon_factory({"sources": [source(logs / "*.jsonl", start_at="end")],
                        "models": {"fraud": model_config()}}).start()
    with open(path, "ab") as fh:
        fh.write(b' 0.5]}\n')
    append(path, [{"probs": [0.5, 0.5]}] * 3)
    # New files: from their start (their own content: a file whose first bytes repeat
    # another's is taken for its copy).
    append(logs / "new.jsonl", [{"id": f"n{i}", "probs": [0.5, 0.5]} for i in range(2)])
    d.wait_value("model_drift_predictions_total", 6, model="fraud")
    # One more line after them: once it counts, the ten old lines would have too.
    append(path, [{"probs": [0.5, 0.5]}])
    d.wait_value("model_drift_predictions_total", 7, model="fraud")
    assert d.value("model_drift_predictions_total", model="fraud") == 7
    assert d.stop() == 0


@pytest.mark.slow
def test_sighup_reload_with_bad_then_good_config_while_lines_flow(daemon_factory, logs):
    writer = Writer(logs / "app.jsonl")
    d = daemon_factory(config_for(logs / "*.jsonl")).start()
    with writing(writer, lambda: 20, lambda: 0.02):
        time.sleep(0.5)
        good = d.config
        d.write_config({**good, "models": {"fraud": {**model_config(), "windows": ["nonsense"]}}})
        d.send(signal.SIGHUP)
        wait_until(lambda: "reload rejected" in d.log(), 10)
        time.sleep(0.5)
        d.write_config({**good, "models": {"fraud": model_config(windows=["1h", "5m", {"count": 1000}])}})
        d.send(signal.SIGHUP)
        wait_until(lambda: d.value("model_drift_window_predictions", model="fraud", window="5m"), 10)
        time.sleep(0.5)
    assert_counted_exactly(d, writer)
    assert "models.fraud.windows[0]" in d.log()
    # State was kept: the 1h window still holds everything written before the reload.
    assert d.value("model_drift_window_predictions", model="fraud", window="1h") == writer.total
    assert d.stop() == 0


def test_failing_checkpoints_are_counted_retried_and_never_published_early(daemon_factory, logs):
    path = logs / "app.jsonl"
    append(path, [{"probs": [0.5, 0.5]}] * 3)
    d = daemon_factory(config_for(path)).start()
    d.wait_value("model_drift_predictions_total", 3, model="fraud")
    state = Path(d.config["state_dir"])
    blocker = state / "checkpoint.npz.tmp"
    blocker.mkdir()  # the temp file cannot be created: as good as a full disk
    journal = state / "journal"  # nor can the journal be appended to
    journal.rename(state / "journal.old")
    journal.mkdir()
    append(path, [{"probs": [0.5, 0.5]}] * 4)
    wait_until(lambda: d.value("drift_monitor_checkpoint_failures_total") >= 2, 15)
    samples = d.scrape()
    # Not durable, so not shown: a kill -9 now must not make the counter go back.
    assert value(samples, "model_drift_predictions_total", model="fraud") == 3
    assert value(samples, "drift_monitor_checkpoint_age_seconds") > 0.5
    assert "checkpoint failed" in d.log()
    blocker.rmdir()
    journal.rmdir()
    d.wait_value("model_drift_predictions_total", 7, timeout_s=30, model="fraud")
    assert d.value("drift_monitor_checkpoint_age_seconds") < 5
    assert d.stop() == 0
