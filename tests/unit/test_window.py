"""window.py: ring buffers checked after every step against a recompute from raw events.

Time-window semantics (DESIGN.md, Semantics): a window of length D holds the events with
ts in (T - D, T], T = max(newest event time, wall clock), "its start may be rounded to a
bucket of at most D/60". The rounding is: buckets are floor(ts / (D/60)), and the window
holds the 60 buckets ending with T's bucket, so its start is in (T - D, T - D + D/60].
An event outside the window when it arrives is left out for good (the clock never goes
back) and counts as late against the shortest time window.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pytest import approx

from monitor.core.aggregate import ModelState
from monitor.core.settings import ReferenceSpec
from monitor.core.window import Added, CountWindow, Labelled, TimeWindow

from .strategies import (
    FAST,
    SLOW,
    Totals,
    count_window,
    distributions,
    in_time_window,
    model_config,
    predictions,
    sum_rows,
    time_window,
)

K = 3
SHORT, LONG = 60.0, 300.0

events = st.lists(
    st.tuples(st.floats(-700.0, 150.0), distributions(K), st.integers(-1, K - 1)),
    min_size=1, max_size=12)
ops = st.lists(st.one_of(st.tuples(st.just("tick"), st.floats(0.0, 400.0)),
                         st.tuples(st.just("batch"), events)),
               min_size=1, max_size=20)
bases = st.sampled_from([0.0, 12345.678, 1.7e9])


def assert_time_window_contract(inside: list, outside: list, clock: float, duration_s: float) -> None:
    """The recompute honours (T - D, T] up to one bucket of rounding at the start."""
    slack = 1e-6 * max(1.0, abs(clock))
    for ts, _, _ in inside:
        assert clock - duration_s - slack < ts <= clock + slack
    for ts, _, _ in outside:
        assert ts <= clock - duration_s + duration_s / 60 + slack


@SLOW
@given(bases, st.integers(1, 10), ops)
def test_windows_equal_a_recompute_from_raw_events_after_every_step(base, count, steps):
    config = model_config(windows=(time_window(SHORT), time_window(LONG), count_window(count)))
    model = ModelState("m", config)
    wall, clock = base, -math.inf
    seen: list[tuple[float, np.ndarray, int]] = []
    for kind, arg in steps:
        if kind == "tick":
            wall += arg
            model.advance(wall)
            clock = max(clock, wall)
        else:
            batch = [(max(clock, wall) + offset, probs, label) for offset, probs, label in arg]
            late = model.ingest(predictions(*zip(*batch)), wall)
            running = max(clock, wall)
            for (ts, _, _), flag in zip(batch, late):
                running = max(running, ts)
                assert bool(flag) == (not in_time_window(ts, running, SHORT)), (ts, running)
            clock = running
            seen += batch
        for spec, window in zip(config.windows, model.windows):
            if spec.duration_s is None:
                inside = list(deque(seen, maxlen=count))
            else:
                inside = [e for e in seen if in_time_window(e[0], clock, spec.duration_s)]
                outside = [e for e in seen if not in_time_window(e[0], clock, spec.duration_s)]
                assert_time_window_contract(inside, outside, clock, spec.duration_s)
            Totals.of(K, inside).assert_matches(window.total())


def test_start_of_a_time_window_is_rounded_up_by_at_most_one_bucket():
    model = ModelState("m", model_config(windows=(time_window(SHORT),)))
    model.ingest(predictions([100.5], [[1.0, 0.0, 0.0]], [-1]), now=100.5)
    model.advance(159.9)  # 100.5 > 159.9 - 60: inside
    assert model.windows[0].total()[0] == 1
    model.advance(160.0)  # bucket [100, 101) has left; 100.5 > 160 - 60 but within D/60 of it
    assert model.windows[0].total()[0] == 0


def test_an_idle_models_time_windows_empty_out_with_the_wall_clock_and_count_windows_keep():
    model = ModelState("m", model_config())
    model.ingest(predictions([1000.0, 1001.0], [[1, 0, 0], [0, 1, 0]], [0, 2]), now=1000.0)
    assert [w.total()[0] for w in model.windows] == [2, 2, 2]
    model.advance(1000.0 + LONG + LONG / 60)
    assert [w.total()[0] for w in model.windows] == [0, 0, 2]
    snapshot = model.advance(1000.0 + LONG + LONG / 60).snapshot()
    assert list(snapshot.window_predictions) == [0, 0, 2]


def test_clock_never_goes_backwards():
    model = ModelState("m", model_config(windows=(time_window(SHORT),)))
    model.ingest(predictions([500.0], [[1, 0, 0]], [-1]), now=500.0)
    model.advance(10.0)
    assert model.clock == 500.0
    assert model.windows[0].total()[0] == 1
    late = model.ingest(predictions([430.0, 499.0], [[1, 0, 0], [0, 1, 0]], [-1, -1]), now=0.0)
    assert list(late) == [True, False]
    assert model.windows[0].total()[0] == 2


@pytest.mark.parametrize("reference", [
    ReferenceSpec("cumulative"),
    ReferenceSpec("window", duration_s=600.0),
    ReferenceSpec("decay", half_life_s=120.0),
])
@SLOW
@given(bases, st.integers(1, 10), ops, st.data())
def test_batch_ingestion_equals_one_line_at_a_time(reference, base, count, steps, data):
    config = model_config(windows=(time_window(SHORT), time_window(LONG), count_window(count)),
                          reference=reference)
    batched, single = ModelState("m", config), ModelState("m", config)
    wall = base
    for kind, arg in steps:
        if kind == "tick":
            wall += arg
            batched.advance(wall)
            single.advance(wall)
            continue
        start = max(batched.clock, wall)
        batch = [(start + offset, probs, label) for offset, probs, label in arg]
        # Split the batch at random points: batch boundaries must not matter.
        cuts = sorted(data.draw(st.sets(st.integers(1, len(batch) - 1), max_size=3))
                      if len(batch) > 1 else set())
        late_batched = []
        for lo, hi in zip([0, *cuts], [*cuts, len(batch)]):
            late_batched += list(batched.ingest(predictions(*zip(*batch[lo:hi])), wall))
        late_single = [bool(single.ingest(predictions(*zip(e)), wall)[0]) for e in batch]
        assert late_batched == late_single
        for a, b in zip(batched.windows, single.windows):
            assert a.total() == approx(b.total(), rel=1e-9, abs=1e-9)
        assert batched.reference.total() == approx(single.reference.total(), rel=1e-9, abs=1e-9)
    assert batched.clock == single.clock
    assert batched.predictions_total == single.predictions_total
    assert list(batched.labels_total) == list(single.labels_total)
    assert batched.probability_total == approx(single.probability_total)


def predict(window: CountWindow, probs: np.ndarray, labels: np.ndarray) -> None:
    """New predictions, all at time 0 (a count window keeps them whatever their time)."""
    window.add(Added.of(np.zeros(len(labels)), probs.reshape(len(labels), window.k), labels,
                        window.epsilon))


def join(window: CountWindow, seq: int, label: int) -> None:
    """A label joined later to prediction number `seq`."""
    window.label(Labelled.of(np.zeros(1), np.array([seq]), np.full((1, window.k), 1 / window.k),
                             np.array([label]), window.epsilon))


@FAST
@given(st.integers(1, 8), st.lists(st.lists(
    st.tuples(distributions(K), st.integers(-1, K - 1)), max_size=25), max_size=8))
def test_count_window_holds_exactly_the_last_n_predictions(count, batches):
    window = CountWindow(count, K)
    oracle: deque = deque(maxlen=count)
    for batch in batches:
        if batch:
            probs = np.array([p for p, _ in batch])
            labels = np.array([label for _, label in batch], dtype=np.int64)
            predict(window, probs, labels)
        oracle.extend((0.0, p, label) for p, label in batch)
        Totals.of(K, list(oracle)).assert_matches(window.total())


@FAST
@given(st.integers(1, 8), st.integers(0, 30), st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, K - 1)), max_size=20), st.data())
def test_count_window_labels_ignore_evicted_sequence_numbers(count, n, updates, data):
    window = CountWindow(count, K)
    probs = np.array([data.draw(distributions(K)) for _ in range(n)]).reshape(n, K)
    predict(window, probs, np.full(n, -1, dtype=np.int64))
    labels = [-1] * n
    for seq, label in updates:
        if seq >= n:
            continue  # only sequence numbers already predicted can be joined
        join(window, seq, label)
        if seq >= n - count:
            labels[seq] = label  # still in the window; an evicted one changes nothing
    last = [(0.0, probs[i], labels[i]) for i in range(max(0, n - count), n)]
    Totals.of(K, last).assert_matches(window.total())


@FAST
@given(st.integers(1, 8), st.integers(0, 50), st.integers(0, 30), st.lists(
    st.tuples(st.integers(0, 90), st.integers(0, K - 1)), max_size=10), st.data())
def test_a_count_window_started_late_holds_only_what_it_was_given(count, first, n, updates,
                                                                  data):
    """A window started after the model's first predictions (new in the config, or a
    v0.1 checkpoint's): numbered from `first`, it holds the predictions added since, never
    an unfilled row, and labels land by sequence number; a restore keeps all of it."""
    window = CountWindow(count, K)
    window.start_at(first)
    probs = np.array([data.draw(distributions(K)) for _ in range(n)]).reshape(n, K)
    predict(window, probs, np.full(n, -1, dtype=np.int64))
    labels = [-1] * n
    for seq, label in updates:
        join(window, seq, label)
        if max(first, first + n - count) <= seq < first + n:
            labels[seq - first] = label
    last = [(0.0, probs[i], labels[i]) for i in range(max(0, n - count), n)]
    Totals.of(K, last).assert_matches(window.total())
    restored = CountWindow(count, K)
    restored.restore(window.state())
    Totals.of(K, last).assert_matches(restored.total())


def test_a_batch_longer_than_the_count_window_keeps_its_tail():
    window = CountWindow(3, 2)
    probs = np.array([[1.0, 0.0]] * 4 + [[0.0, 1.0]] * 3)
    labels = np.array([0, 0, 0, 0, 1, -1, 1], dtype=np.int64)
    predict(window, probs, labels)
    total = window.total()
    Totals.of(2, [(0.0, p, int(label)) for p, label in zip(probs[-3:], labels[-3:])]).assert_matches(
        total, abs_=1e-9)


@FAST
@given(st.lists(st.tuples(st.floats(0.0, 5000.0), distributions(K), st.integers(-1, K - 1)),
                min_size=1, max_size=30), st.floats(0.0, 1000.0))
def test_time_window_state_restore_continues_identically(events_, extra):
    first, second = events_[: len(events_) // 2], events_[len(events_) // 2:]
    a = TimeWindow(LONG, K)

    def feed(window, batch, clock):
        if not batch:
            return
        ts = np.array([e[0] for e in batch])
        probs = np.array([e[1] for e in batch])
        labels = np.array([e[2] for e in batch], dtype=np.int64)
        window.advance(clock)
        window.add_rows(ts, sum_rows(probs, labels, 1e-12))

    clock = max(e[0] for e in events_)
    feed(a, first, clock)
    b = TimeWindow(LONG, K)
    b.restore({key: np.array(v, copy=True) for key, v in a.state().items()})
    for window in (a, b):
        feed(window, second, clock + extra)
    assert b.head == a.head
    assert b.total() == approx(a.total())


@FAST
@given(st.sampled_from([7.0, 10.0, 45.0, 0.9]), st.integers(1, 10**6), st.sampled_from([-1, 0, 1]),
       st.integers(58, 62))
def test_a_line_is_late_exactly_when_it_is_left_out_of_the_shortest_window(duration, m, nudge, lag):
    """DESIGN.md: an event older than the window's start is left out of it, and a line
    older than the start of the shortest time window counts as late. Both must use the
    same rounding, or a line is counted ok yet held by no window (or late yet inside)."""
    bucket_s = duration / 60
    ts = float(m * bucket_s)
    if nudge:
        ts = float(np.nextafter(ts, nudge * np.inf))
    clock = ts + lag * bucket_s
    model = ModelState("m", model_config(windows=(time_window(duration),)))
    model.advance(clock)
    late = model.ingest(predictions([ts], [[1.0, 0.0, 0.0]], [-1]), now=clock)
    held = model.windows[0].total()[0] == 1
    assert bool(late[0]) == (not held), (ts, clock)
