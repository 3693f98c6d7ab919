"""Daemon.write_checkpoint(): the public way benchmarks time a checkpoint. It makes the
state durable (a fresh load sees every line read) and publishes the snapshot, and the
seconds it returns are wall time even when the daemon runs on a frozen clock."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from monitor.shell import checkpoint
from monitor.shell.config import load_config
from monitor.shell.daemon import Daemon, Reader
from tests.system.conftest import append, model_config, source

FROZEN = 1_795_000_000.0  # the daemon's clocks never move in this test


def test_write_checkpoint_is_durable_and_timed_in_wall_seconds(tmp_path: Path) -> None:
    log = tmp_path / "preds.jsonl"
    append(log, [{"ts": FROZEN - 10 + i / 100, "id": f"r-{i}", "probs": [0.3, 0.7],
                  "label": i % 2} for i in range(50)])
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"), "sources": [source(log)],
        "models": {"fraud": model_config()}}))
    config = load_config(str(config_path))
    checkpoint.make_state_dir(str(tmp_path / "state"))
    daemon = Daemon(config, None, clock=lambda: FROZEN, monotonic=lambda: 100.0)
    daemon.reader = Reader(config, daemon.aggregator)
    try:
        while daemon.reader.step(FROZEN):
            pass
        before = time.perf_counter()
        seconds = daemon.write_checkpoint()
        elapsed = time.perf_counter() - before
    finally:
        daemon.reader.close()

    assert 0 < seconds <= elapsed  # real time spent, though neither clock moved
    assert daemon.snapshot is not None and daemon.snapshot.taken_at == FROZEN
    assert not daemon.dirty
    saved = checkpoint.load(str(tmp_path / "state"), daemon.journal.budget)
    assert saved is not None and saved.meta["written_at"] == FROZEN
    (record,) = saved.meta["tail"]["preds"]["files"]
    assert (record["offset"], record["line_no"]) == (log.stat().st_size, 50)
    fresh = Daemon(config, None, clock=lambda: FROZEN, monotonic=lambda: 100.0)
    fresh.restore()  # what a restart after kill -9 would see
    assert fresh.reader is not None
    fresh.reader.close()
    assert fresh.aggregator.counters["preds"].lines["ok"] == 50
