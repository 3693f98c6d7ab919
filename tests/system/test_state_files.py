"""The state files: what a checkpoint costs on disk, what kill -9 in the middle of a
journal restores, who can read them, and that no saved state can stop a start-up."""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from monitor.shell import checkpoint
from tests.system.conftest import DaemonProcess, append, model_config, source
from tests.waiting import wait_until


def labelled_config(logs: Path, **extra: object) -> dict:
    return {"sources": [source(logs / "pred-*.jsonl")],
            "labels": [{"name": "feedback", "path": str(logs / "labels-*.jsonl"),
                        "model": "fraud", "join_ttl": "1h", "max_pending": 100000}],
            "models": {"fraud": model_config()}, **extra}


def predictions(first: int, n: int, ts: float) -> list[dict]:
    rng = np.random.default_rng(first)
    return [{"ts": ts + i * 0.01, "id": f"r-{first + i}",
             "probs": [round(p, 6), round(1 - round(p, 6), 6)]}
            for i, p in zip(range(n), rng.uniform(0, 1, n))]


def labels(ids: range) -> list[dict]:
    return [{"id": f"r-{i}", "label": i % 2} for i in ids]


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise AssertionError("no write_bytes in /proc/<pid>/io")


def state_changed_since(state: Path, mark_ns: int) -> bool:
    return any(p.stat().st_mtime_ns > mark_ns for p in state.iterdir() if p.is_file())


def drift_samples(d: DaemonProcess) -> dict:
    return {key: v for key, v in d.scrape().items()
            if key[0].startswith(("model_drift_", "drift_monitor_label", "drift_monitor_pending"))}


def test_a_checkpoint_after_a_few_lines_writes_kilobytes_not_the_whole_state(daemon_factory, logs):
    """20,000 ids waiting for labels make a state of about a megabyte; ten more lines
    must cost what they changed (a journal record), not a rewrite of that megabyte."""
    ts = time.time() - 120
    append(logs / "pred-1.jsonl", predictions(0, 20000, ts))
    d = daemon_factory(labelled_config(logs)).start()
    d.wait_value("drift_monitor_pending_labels", 20000, timeout_s=60, model="fraud")
    state = Path(d.config["state_dir"])
    full = sum(p.stat().st_size for p in state.iterdir())
    assert full > 300_000
    assert d.proc is not None
    before, mark = write_bytes(d.proc.pid), os.stat(state).st_mtime_ns
    for p in state.iterdir():
        mark = max(mark, p.stat().st_mtime_ns)
    append(logs / "pred-1.jsonl", predictions(20000, 10, ts + 60))
    # No scrape in between: the wait watches the files, so nothing else is written.
    wait_until(lambda: state_changed_since(state, mark), 30)
    written = write_bytes(d.proc.pid) - before
    assert written < 64 * 1024, f"{written} bytes written for 10 lines (state {full})"
    d.wait_value("drift_monitor_pending_labels", 20010, model="fraud")
    assert d.stop() == 0


def test_kill_9_in_the_middle_of_a_journal_restores_exactly(daemon_factory, logs, tmp_path):
    """Several records on top of the snapshot (predictions with ids, labels joined, labels
    early), then kill -9: the restarted daemon shows exactly what one that never stopped
    shows, and the ids still waiting are joined by labels written after the restart."""
    ts = time.time() - 120
    config = labelled_config(logs)
    d = daemon_factory(config).start()
    batches = [(predictions(0, 300, ts), labels(range(0, 100, 3))),
               (predictions(300, 300, ts + 10), labels(range(200, 400, 2))),
               (predictions(600, 300, ts + 20), labels([*range(950, 960), *range(5, 50, 5)]))]
    for n, (preds, labs) in enumerate(batches, 1):
        append(logs / "pred-1.jsonl", preds)
        append(logs / "labels-1.jsonl", labs)
        d.wait_value("model_drift_predictions_total", 300 * n, model="fraud")
    d.wait_value("drift_monitor_lines_total", 100 + 34 + 19, timeout_s=20, source="feedback",
                 status="ok")
    before = drift_samples(d)
    d.kill()
    journal = Path(d.config["state_dir"]) / "journal"
    assert journal.stat().st_size > 1000  # records on top of the snapshot
    d.start()
    assert drift_samples(d) == before
    assert "journal_records=" in d.log() and "journal_records=0" not in d.log()
    late = labels(range(600, 900, 7))
    append(logs / "labels-1.jsonl", late)

    (tmp_path / "reference").mkdir()
    reference = DaemonProcess(tmp_path / "reference", config)  # the same logs, no kill
    reference.start()
    try:
        expected_lines = 100 + 34 + 19 + len(late)
        for daemon in (d, reference):
            daemon.wait_value("drift_monitor_lines_total", expected_lines, timeout_s=30,
                              source="feedback", status="ok")
            daemon.wait_value("model_drift_predictions_total", 900, model="fraud")
        # Equal up to float summation order (the reference read it all in one block).
        assert drift_samples(d) == pytest.approx(drift_samples(reference), rel=1e-12)
    finally:
        reference.kill()
    assert d.stop() == 0


def test_checkpoint_failures_total_continues_across_a_restart(daemon_factory, logs):
    path = logs / "pred-1.jsonl"
    append(path, [{"probs": [0.5, 0.5]}] * 3)
    d = daemon_factory({"sources": [source(path)], "models": {"fraud": model_config()}}).start()
    d.wait_value("model_drift_predictions_total", 3, model="fraud")
    state = Path(d.config["state_dir"])
    blockers = [state / "checkpoint.npz.tmp", state / "journal"]
    if blockers[1].exists():
        blockers[1].rename(state / "journal.old")
    for blocker in blockers:
        blocker.mkdir()  # neither a snapshot nor a journal record can be written
    append(path, [{"probs": [0.5, 0.5]}] * 4)
    wait_until(lambda: (d.value("drift_monitor_checkpoint_failures_total") or 0) >= 2, 30)
    for blocker in blockers:
        blocker.rmdir()
    d.wait_value("model_drift_predictions_total", 7, timeout_s=60, model="fraud")
    failures = d.value("drift_monitor_checkpoint_failures_total")
    assert failures is not None and failures >= 2
    assert d.stop() == 0
    d.start()
    assert d.value("drift_monitor_checkpoint_failures_total") == failures
    assert d.stop() == 0


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_state_dir_is_0700_and_every_state_file_0600_whatever_the_umask(daemon_factory, logs, umask):
    path = logs / "pred-1.jsonl"
    append(path, predictions(0, 50, time.time() - 60))
    d = daemon_factory(labelled_config(logs))
    old = os.umask(umask)
    try:
        d.start()
    finally:
        os.umask(old)
    append(path, predictions(50, 50, time.time() - 60))
    d.wait_value("model_drift_predictions_total", 100, model="fraud")
    assert d.stop() == 0
    state = Path(d.config["state_dir"])
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in state.iterdir()}
    assert modes and set(modes.values()) == {0o600}, modes


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_temp_files_are_0600_while_being_written(tmp_path, umask):
    seen = []
    old = os.umask(umask)
    try:
        checkpoint._replace_atomically(str(tmp_path / "f"),
                                       lambda fh: seen.append(os.fstat(fh.fileno()).st_mode))
        checkpoint.make_state_dir(str(tmp_path / "made"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(seen[0]) == 0o600
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "made").stat().st_mode) == 0o700


def test_symlinks_planted_at_state_file_paths_are_never_written_through(daemon_factory, logs,
                                                                         tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    d = daemon_factory(labelled_config(logs))
    state = Path(d.config["state_dir"])
    state.mkdir()
    targets = {}
    for name in ("checkpoint.npz.tmp", "journal.tmp", "journal"):
        target = outside / f"{name}.target"
        target.write_text("precious\n")
        (state / name).symlink_to(target)
        targets[name] = target
    append(logs / "pred-1.jsonl", predictions(0, 50, time.time() - 60))
    d.start()
    d.wait_value("model_drift_predictions_total", 50, model="fraud")
    (state / "journal").unlink()  # and one planted while it runs, over the live journal
    (state / "journal").symlink_to(targets["journal"])
    append(logs / "pred-1.jsonl", predictions(50, 50, time.time() - 60))
    d.wait_value("model_drift_predictions_total", 100, timeout_s=30, model="fraud")
    assert d.stop() == 0
    assert all(t.read_text() == "precious\n" for t in targets.values())
    assert not any(p.is_symlink() for p in state.iterdir())
    d.start()  # and the files written instead are good
    d.wait_value("model_drift_predictions_total", 100, model="fraud")
    assert d.stop() == 0


def snapshot_of(d: DaemonProcess) -> tuple[dict, dict]:
    data = (Path(d.config["state_dir"]) / checkpoint.FILENAME).read_bytes()
    return checkpoint.decode(data)


def rewrite(d: DaemonProcess, meta: dict, arrays: dict) -> None:
    state = Path(d.config["state_dir"])
    meta = {k: v for k, v in meta.items() if k not in ("version", "arrays")}
    (state / checkpoint.FILENAME).write_bytes(checkpoint.encode(meta, arrays))
    (state / "journal").unlink(missing_ok=True)


def replace_tail(meta: dict, arrays: dict) -> None:
    meta["tail"] = ["not", "an", "object"]


def replace_models(meta: dict, arrays: dict) -> None:
    meta["aggregator"]["models"] = {"fraud": 1}


def labels_beyond_k(meta: dict, arrays: dict) -> None:
    name = next(n for n in arrays if n.endswith(".labels") and ".window." in n)
    arrays[name] = np.full_like(arrays[name], 7)


def a_wrong_shape(meta: dict, arrays: dict) -> None:
    name = next(n for n in arrays if n.endswith(".sums"))
    arrays[name] = arrays[name][:1]


def early_labels_beyond_k(meta: dict, arrays: dict) -> None:
    arrays["j0.early_ids"] = np.frombuffer(b'["x"]', dtype=np.uint8)
    arrays["j0.early_labels"] = np.array([5])
    arrays["j0.early_ts"] = np.array([time.time()])


@pytest.mark.parametrize("damage", [replace_tail, replace_models, labels_beyond_k, a_wrong_shape,
                                    early_labels_beyond_k])
def test_well_formed_but_wrong_state_is_moved_aside_and_the_daemon_starts(daemon_factory, logs,
                                                                         damage):
    append(logs / "pred-1.jsonl", predictions(0, 20, time.time() - 60))
    append(logs / "labels-1.jsonl", labels(range(100, 101)))  # an early label: a j0 store
    d = daemon_factory(labelled_config(logs)).start()
    d.wait_value("model_drift_predictions_total", 20, model="fraud")
    assert d.stop() == 0
    d.start()  # whose first checkpoint is a snapshot of all that
    assert d.stop() == 0
    meta, arrays = snapshot_of(d)
    damage(meta, arrays)
    rewrite(d, meta, arrays)
    d.start()
    d.wait_value("model_drift_predictions_total", 20, timeout_s=30, model="fraud")  # read again
    log = d.log()
    assert "checkpoint unreadable, starting fresh" in log and "Traceback" not in log
    assert any(".corrupt-" in p.name for p in Path(d.config["state_dir"]).iterdir())
    assert d.stop() == 0


def test_an_array_header_declaring_56_tib_is_refused_before_allocating(daemon_factory, logs):
    append(logs / "pred-1.jsonl", predictions(0, 20, time.time() - 60))
    d = daemon_factory(labelled_config(logs)).start()
    d.wait_value("model_drift_predictions_total", 20, model="fraud")
    assert d.stop() == 0
    path = Path(d.config["state_dir"]) / checkpoint.FILENAME
    data = bytearray(path.read_bytes())
    # The count window's probs: (1000, 2) float64 -> (3_500_000_000_000, 2), same width.
    old, new = b"'shape': (1000, 2), }", b"'shape': (3500000000000, 2), }"
    at = data.index(old)
    end = data.index(b"\n", at)  # the header's end: padding spaces, then a newline
    assert data[end - (len(new) - len(old)):end] == b" " * (len(new) - len(old))
    data[at:end] = new + b" " * (end - at - len(new))
    path.write_bytes(bytes(data))
    d.start()
    d.wait_value("model_drift_predictions_total", 20, timeout_s=30, model="fraud")
    assert "checkpoint unreadable, starting fresh" in d.log()
    assert d.stop() == 0


def test_a_kill_during_a_journal_write_leaves_a_torn_record_that_is_ignored(daemon_factory, logs):
    """What a power cut leaves (a record cut short) was never durable, so never shown:
    the restart uses the records before it."""
    append(logs / "pred-1.jsonl", predictions(0, 100, time.time() - 60))
    d = daemon_factory(labelled_config(logs)).start()
    d.wait_value("model_drift_predictions_total", 100, model="fraud")
    append(logs / "pred-1.jsonl", predictions(100, 100, time.time() - 60))
    d.wait_value("model_drift_predictions_total", 200, model="fraud")
    d.send(signal.SIGKILL)
    assert d.proc is not None
    d.proc.wait(timeout=10)
    journal = Path(d.config["state_dir"]) / checkpoint.JOURNAL
    with open(journal, "ab") as fh:  # the start of a record that never completed
        fh.write(checkpoint.encode_record({"tail": {}}, {})[:20])
    d.start()
    d.wait_value("model_drift_predictions_total", 200, model="fraud")
    assert "torn_record_ignored=1" in d.log() and "checkpoint unreadable" not in d.log()
    assert d.stop() == 0


def test_the_journal_is_compacted_once_restart_would_replay_too_many_join_inputs(tmp_path):
    from monitor.core.join import PredictionsOp

    journal = checkpoint.Journal(str(tmp_path), 1 << 20, max_inputs=10)
    arrays = {"a": np.zeros(3)}
    journal.snapshot({"tail": {}}, arrays, {})
    op = PredictionsOp([f"r-{i}" for i in range(6)], np.zeros(6), np.arange(6), np.zeros((6, 2)))
    assert journal.append({"tail": {}}, arrays, [("m", 60.0, 100, [op])])
    assert not journal.wants_snapshot()  # 6 inputs to replay
    assert journal.append({"tail": {}}, arrays, [("m", 60.0, 100, [op])])
    assert journal.wants_snapshot()  # 12: a snapshot next, and the count starts again
    journal.snapshot({"tail": {}}, arrays, {})
    assert not journal.wants_snapshot()
