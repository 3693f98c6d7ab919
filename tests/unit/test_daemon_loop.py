"""The daemon's loop, throttles and back-off, driven by a fake clock instead of sleeping."""

from __future__ import annotations

import json
import logging
import os
import queue
from pathlib import Path

import pytest

from monitor.shell.config import build_config
from monitor.shell.daemon import (
    MAX_BACKOFF_S,
    STOP,
    WAKE,
    CatchUp,
    Daemon,
    Reader,
    Throttle,
    _watch_roots,
    take_messages,
)

POLL_S, CHECKPOINT_S = 1.0, 5.0
EPOCH = 1_700_000_000.0  # the window clock is wall time: the fake starts somewhere real


class FakeClock:
    """Monotonic seconds that move only when a test says so; `wall` is EPOCH later."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return EPOCH + self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_throttle_lets_one_message_per_key_through_each_interval_and_counts_the_rest():
    clock = FakeClock()
    throttle = Throttle(10.0, clock)
    assert throttle.allow("a") == 0
    assert throttle.allow("a") is None
    clock.advance(9.9)
    assert throttle.allow("a") is None
    assert throttle.allow("b") == 0  # keys are independent
    clock.advance(0.1)  # exactly interval_s after the last one let through
    assert throttle.allow("a") == 2
    assert throttle.allow("a") is None
    clock.advance(10.0)
    assert throttle.allow("a") == 1
    assert throttle.allow("b") == 0


def test_catch_up_logs_progress_every_interval_and_once_when_caught_up(caplog):
    caplog.set_level(logging.INFO, logger="monitor.shell.daemon")
    clock = FakeClock()
    catch_up = CatchUp(100 << 20, clock, every_s=5.0)
    assert [r.getMessage() for r in caplog.records] == ["catching up backlog=100.0MiB"]
    caplog.clear()
    clock.advance(4.0)
    assert catch_up.progress(20 << 20) is False
    assert caplog.records == []  # not yet every_s since the start
    clock.advance(1.0)
    assert catch_up.progress(20 << 20) is False
    assert [r.getMessage() for r in caplog.records] == [
        "catching up done=40.0MiB of 100.0MiB rate=8.0MiB/s eta=8s"]
    caplog.clear()
    clock.advance(2.0)
    assert catch_up.progress(10 << 20) is False
    assert caplog.records == []  # 2 s since the last progress line
    clock.advance(1.0)
    assert catch_up.progress(0) is True
    assert [r.getMessage() for r in caplog.records] == ["caught up read=50.0MiB in 8.0s"]


def test_watch_roots_are_the_deepest_folders_without_a_wildcard(tmp_path):
    config = build_config({
        "sources": [
            {"name": "a", "path": "/var/log/app/*.jsonl", "model": "m"},
            {"name": "b", "path": "/var/log/app/other-?.jsonl", "model": "m"},
            {"name": "c", "path": "/srv/*/pods/[ab]/p.jsonl", "model": "m"},
            {"name": "d", "path": "/plain/file.jsonl", "model": "m"},
        ],
        "labels": [{"name": "l", "path": "/var/log/*/labels.jsonl"}],
        "models": {"m": {"classes": ["x", "y"]}},
    }, str(tmp_path))
    assert _watch_roots([*config.sources, *config.labels]) == {
        ("/var/log/app", False), ("/srv", True), ("/plain", False), ("/var/log", True)}


def test_take_messages_takes_everything_queued_without_waiting_when_told_not_to():
    messages: queue.SimpleQueue[str] = queue.SimpleQueue()
    assert take_messages(messages, 0.0) == []
    messages.put(WAKE)
    messages.put(STOP)
    assert take_messages(messages, 0.0) == [WAKE, STOP]
    assert messages.empty()


# -- the loop ------------------------------------------------------------------------


def line(i: int) -> bytes:
    return json.dumps({"id": f"r{i}", "probs": [0.5, 0.5], "label": 0}).encode() + b"\n"


def append(path: Path, n: int) -> None:
    with open(path, "ab") as fh:
        fh.write(b"".join(line(i) for i in range(n)))


class Harness:
    """A Daemon without its HTTP server and watcher: the loop, checkpoints and reader
    only, on a fake clock, in `tmp_path`."""

    def __init__(self, tmp_path: Path, **top: object) -> None:
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.state = tmp_path / "state"
        self.state.mkdir()
        self.clock = FakeClock()
        self.waits: list[float] = []
        self.config = build_config({
            "sources": [{"name": "preds", "path": str(self.logs / "p-*.jsonl"), "model": "fraud"}],
            "models": {"fraud": {"classes": ["legit", "fraud"], "windows": ["1h"],
                                 "min_samples": 1}},
            "state_dir": str(self.state), "watch": "poll", "listen": "127.0.0.1:0",
            "poll_interval": f"{POLL_S}s", "checkpoint_interval": f"{CHECKPOINT_S}s", **top,
        }, str(tmp_path))
        self.daemon = Daemon(self.config, None, clock=self.clock.wall, monotonic=self.clock,
                             wait=self.wait)
        self.daemon.reader = Reader(self.config, self.daemon.aggregator, None, self.clock)
        self.daemon.reader.scan()
        self.stop_after: int | None = None

    def wait(self, messages: queue.SimpleQueue[str], timeout: float) -> list[str]:
        """What the loop would block on: time passes by `timeout` instead."""
        self.waits.append(timeout)
        self.clock.advance(timeout)
        if self.stop_after is not None and len(self.waits) >= self.stop_after:
            messages.put(STOP)
        return take_messages(messages, 0.0)

    def published(self) -> int:
        """Predictions in the snapshot /metrics serves (durable ones only)."""
        snapshot = self.daemon.snapshot
        return -1 if snapshot is None else snapshot.models[0].predictions_total

    def checkpoint_mtime(self) -> int:
        return os.stat(self.state / "checkpoint.npz").st_mtime_ns


def test_each_step_polls_when_due_and_publishes_only_what_a_checkpoint_made_durable(tmp_path):
    h = Harness(tmp_path)
    d = h.daemon
    assert d.step() == POLL_S  # the first turn polls and checkpoints at once
    assert h.published() == 0
    append(h.logs / "p-1.jsonl", 3)
    h.clock.advance(POLL_S / 2)
    assert d.step() == pytest.approx(POLL_S / 2)  # not due: the new file is not looked for
    assert d.reader.files_followed() == {"preds": 0}
    h.clock.advance(POLL_S / 2)
    assert d.step() == 0.0  # read something: look again at once
    assert d.reader.files_followed() == {"preds": 1}
    assert d.aggregator.advance(h.clock.wall()).snapshot().models[0].predictions_total == 3
    assert h.published() == 0  # read, but not durable yet
    assert d.step() == POLL_S  # nothing more: wait for the next poll
    h.clock.advance(CHECKPOINT_S - 2 * POLL_S)
    d.step()
    assert h.published() == 0
    h.clock.advance(POLL_S)  # CHECKPOINT_S after the first checkpoint
    d.step()
    assert h.published() == 3
    assert d.next_checkpoint == h.clock.now + CHECKPOINT_S


def test_a_wake_message_polls_on_the_next_step_without_waiting_for_the_interval(tmp_path):
    h = Harness(tmp_path)
    d = h.daemon
    d.step()
    append(h.logs / "p-1.jsonl", 2)
    h.clock.advance(0.1)
    d.step()
    assert d.reader.files_followed() == {"preds": 0}
    d.handle([WAKE])
    assert d.step() == 0.0
    assert d.reader.files_followed() == {"preds": 1}


def test_an_idle_checkpoint_writes_nothing_but_republishes_with_the_clock(tmp_path):
    h = Harness(tmp_path)
    d = h.daemon
    d.step()
    written = h.checkpoint_mtime(), (h.state / "journal").stat().st_size
    first = d.snapshot
    h.clock.advance(CHECKPOINT_S)
    d.step()
    assert d.snapshot is not first  # the windows move with the clock even when idle
    assert (h.checkpoint_mtime(), (h.state / "journal").stat().st_size) == written


def test_checkpoints_back_off_while_writes_fail_and_resume_at_the_interval(tmp_path, caplog):
    h = Harness(tmp_path)
    d = h.daemon
    # The temp file cannot be created, nor the journal appended to: as good as a full disk.
    (h.state / "checkpoint.npz.tmp").mkdir()
    (h.state / "journal").mkdir()
    delays = []
    for failures in range(1, 9):
        d.step()
        assert d.failures == failures
        delays.append(d.next_checkpoint - h.clock.now)
        h.clock.advance(delays[-1])
    assert delays == [min(CHECKPOINT_S * 2 ** n, MAX_BACKOFF_S) for n in range(1, 9)]
    assert delays[-1] == MAX_BACKOFF_S
    assert d.snapshot is None  # nothing durable: nothing published
    assert "checkpoint failed" in caplog.text and "retry_in=60.0s" in caplog.text
    append(h.logs / "p-1.jsonl", 4)
    (h.state / "checkpoint.npz.tmp").rmdir()
    (h.state / "journal").rmdir()
    h.clock.advance(-1.0)  # just before the retry is due: no write yet
    d.step()
    assert d.snapshot is None
    h.clock.advance(1.0)
    d.step()
    assert h.published() == 4
    assert d.failures == 8  # a counter: kept after the recovery
    assert d.next_checkpoint == h.clock.now + CHECKPOINT_S


def test_main_loop_waits_exactly_until_the_next_poll_or_checkpoint_and_stops_on_stop(tmp_path):
    h = Harness(tmp_path, poll_interval="2s", checkpoint_interval="3s")
    append(h.logs / "p-1.jsonl", 5)
    h.stop_after = 6
    h.daemon.main_loop()
    # t=0: read 5 lines, wait 0; t=0: nothing more, next poll at 2 (checkpoint at 3);
    # t=2: poll, next at 4; t=3: checkpoint, next at 6; t=4: poll, next at 6; t=6: both.
    assert h.waits == [0.0, 2.0, 1.0, 1.0, 2.0, 2.0]
    assert h.daemon.stopping
    assert h.published() == 5
    assert h.daemon.next_checkpoint == 9.0
    assert h.daemon.last_tick == 6.0


def test_a_sweep_that_read_something_is_followed_by_another_without_waiting(tmp_path):
    h = Harness(tmp_path)
    d = h.daemon
    d.step()
    n = (3 << 20) // len(line(0))  # more than one read (CHUNK_BYTES) of lines
    append(h.logs / "p-1.jsonl", n)
    reader = d.reader
    sweep = reader.step
    reader.step = lambda now: sweep(now, budget=1)  # one read a sweep
    h.clock.advance(POLL_S)
    counts = []
    while not counts or counts[-1] < n:
        assert d.step() == 0.0  # with the clock standing still: never waits for the interval
        counts.append(d.aggregator.advance(h.clock.wall()).snapshot().models[0].predictions_total)
    assert len(counts) > 2 and counts == sorted(set(counts))  # one read at a time, each new
    assert d.step() == POLL_S  # a sweep found nothing: back to the interval
