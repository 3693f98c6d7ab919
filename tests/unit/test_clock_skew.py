"""DESIGN.md "Clock skew": an event stamped more than `max_clock_skew` ahead of the
daemon's clock never moves a window's clock; it is rejected as bad_timestamp, the log
detail saying how far ahead. In `run` the clock is the wall clock; in `replay` (now=-inf)
the newest event time not itself too far ahead of the line read before it."""

from __future__ import annotations

import math

from monitor.core.aggregate import Aggregator
from monitor.shell.config import build_config

from .strategies import ingest_predictions, line

CONFIG = build_config({
    "sources": [{"name": "preds", "path": "/logs/p.jsonl", "model": "fraud"}],
    "models": {"fraud": {"classes": ["legit", "fraud"], "windows": ["5m", "1h"], "min_samples": 1}},
})
SOURCE = CONFIG.sources[0]
T = 1_800_000_000.0
REPLAY = -math.inf
WALL = T + 10**7  # replay runs long after the log was written


def replay(aggregator: Aggregator, lines: list[bytes]):
    return ingest_predictions(aggregator, SOURCE, lines, now=REPLAY, arrival=WALL)


def lines_at(*stamps: float) -> list[bytes]:
    return [line(ts=t, probs=[0.5, 0.5]) for t in stamps]


def counted(aggregator: Aggregator) -> tuple[dict[str, int], dict[str, int]]:
    c = aggregator.counters["preds"]
    return c.lines, {reason: n for reason, n in c.rejected.items() if n}


def test_run_rejects_a_line_stamped_beyond_the_skew_and_keeps_the_clock():
    aggregator = Aggregator(CONFIG)
    rejects = ingest_predictions(aggregator, SOURCE, lines_at(T - 10, T + 7200, T + 299), now=T)
    assert [(r.index, r.reason.value, r.detail) for r in rejects] == [
        (1, "bad_timestamp", "7200s ahead of the clock")]
    assert aggregator.models["fraud"].clock == T + 299
    ingest_predictions(aggregator, SOURCE, lines_at(T + 1, T + 2), now=T + 2)
    assert counted(aggregator) == ({"ok": 4, "rejected": 1, "late": 0}, {"bad_timestamp": 1})


def test_replay_never_lets_a_lone_line_stamped_hours_ahead_move_the_clock():
    aggregator = Aggregator(CONFIG)
    replay(aggregator, lines_at(T, T + 1, T + 7200))
    rejects = replay(aggregator, lines_at(T + 2, T + 7201, T + 3))
    assert [(r.index, r.detail) for r in rejects] == [(1, "7199s ahead of the clock")]
    assert aggregator.models["fraud"].clock == T + 3
    assert counted(aggregator) == ({"ok": 4, "rejected": 2, "late": 0}, {"bad_timestamp": 2})


def test_replay_across_a_gap_in_the_log_follows_the_new_time():
    aggregator = Aggregator(CONFIG)
    after = T + 3 * 3600
    replay(aggregator, lines_at(T, T + 60, after, after + 1))
    replay(aggregator, lines_at(after + 2, after + 3))
    assert aggregator.models["fraud"].clock == after + 3
    assert counted(aggregator) == ({"ok": 6, "rejected": 0, "late": 0}, {})


def test_replay_rejects_the_last_line_of_a_block_when_nothing_confirms_it_is_a_gap():
    aggregator = Aggregator(CONFIG)
    replay(aggregator, lines_at(T, T + 1, T + 7200))
    replay(aggregator, lines_at(T + 7201, T + 7202))  # it was a gap after all: the clock moves on
    assert aggregator.models["fraud"].clock == T + 7202
    assert counted(aggregator) == ({"ok": 4, "rejected": 1, "late": 0}, {"bad_timestamp": 1})


def test_max_clock_skew_sets_how_far_ahead_is_too_far():
    config = build_config({**{"sources": [{"name": "preds", "path": "/p", "model": "fraud"}]},
                           "models": {"fraud": {"classes": ["a", "b"]}}, "max_clock_skew": "1h"})
    aggregator = Aggregator(config)
    rejects = ingest_predictions(aggregator, config.sources[0], lines_at(T + 3599, T + 3601), now=T)
    assert [r.index for r in rejects] == [1]
