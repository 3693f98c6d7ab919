"""One contract for every `Window` kind (time, count, and the reference kinds): after
every step its total equals a recompute from the raw events it should hold (numpy, no
rings), a batch added whole equals it added one row at a time, and state -> restore
gives it back exactly, and labels joined later land as if the line had carried them. As
river tests every statistic with one generic test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.core.aggregate import ModelState
from monitor.core.reference import Cumulative, Decay
from monitor.core.settings import ReferenceSpec
from monitor.core.window import Added, CountWindow, Labelled, TimeWindow, Window, row_total

from .strategies import count_window, distributions, model_config, predictions, time_window

K, EPS, D, H, N = 3, 1e-12, 60.0, 30.0, 5

# kind -> (a fresh window, which raw events it holds at clock T: ts, arrival order -> weight)
Oracle = Callable[[np.ndarray, float], np.ndarray]


def time_weights(ts: np.ndarray, clock: float) -> np.ndarray:
    bucket_s = D / 60
    return (np.floor(ts / bucket_s) > np.floor(clock / bucket_s) - 60).astype(float)


def count_weights(ts: np.ndarray, clock: float) -> np.ndarray:
    w = np.zeros(len(ts))
    w[max(0, len(ts) - N):] = 1.0
    return w


KINDS: dict[str, tuple[Callable[[], Window], Oracle]] = {
    "time": (lambda: TimeWindow(D, K), time_weights),
    "count": (lambda: CountWindow(N, K, EPS), count_weights),
    "cumulative": (lambda: Cumulative(K), lambda ts, clock: np.ones(len(ts))),
    "decay": (lambda: Decay(H, K), lambda ts, clock: 2.0 ** (-(clock - ts) / H)),
}

steps = st.lists(st.tuples(st.floats(0.0, 90.0),  # the clock moves on by this much
                           st.lists(st.tuples(st.floats(0.0, 90.0), distributions(K),
                                              st.integers(-1, K - 1)), max_size=6)),
                 min_size=1, max_size=8)


def batch(ts: list[float], probs: list[np.ndarray], labels: list[int]) -> Added:
    return Added.of(np.asarray(ts, dtype=float), np.asarray(probs).reshape(len(ts), K),
                    np.asarray(labels, dtype=np.int64), EPS)


def played(steps: list) -> Iterator[tuple[float, list[float], list[np.ndarray], list[int]]]:
    """Each step's clock and its events' times, probabilities and labels. Events are up
    to 90 s (past a window's start) before the clock, never after it (the model's clock
    is their running max, so nothing reaches a window ahead of its clock)."""
    clock = 1000.0
    for dt, events in steps:
        clock += dt
        yield (clock, [clock - age for age, _, _ in events], [p for _, p, _ in events],
               [y for _, _, y in events])


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=60, deadline=None)
@given(steps=steps)
def test_every_window_kind_holds_exactly_its_events(kind: str, steps: list) -> None:
    make, weights = KINDS[kind]
    whole, single = make(), make()
    ts_all: list[float] = []
    probs_all: list[np.ndarray] = []
    labels_all: list[int] = []
    for clock, ts, probs, labels in played(steps):
        for w in (whole, single):
            w.advance(clock)
        if ts:
            whole.add(batch(ts, probs, labels))
            for one in zip(ts, probs, labels):
                single.add(batch([one[0]], [one[1]], [one[2]]))
        ts_all += ts
        probs_all += probs
        labels_all += labels
        if not ts_all:
            continue
        t = np.asarray(ts_all)
        expected = row_total(np.asarray(probs_all), np.asarray(labels_all, dtype=np.int64), EPS,
                             weights(t, clock))
        np.testing.assert_allclose(whole.total(), expected, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(single.total(), whole.total(), rtol=1e-9, atol=1e-9)
    restored = make()
    restored.restore({key: np.array(v, copy=True) for key, v in whole.state().items()})
    np.testing.assert_array_equal(restored.total(), whole.total())


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=60, deadline=None)
@given(steps=steps, joins=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, K - 1)), max_size=8),
       later=st.floats(0.0, 90.0))
def test_a_label_joined_later_counts_as_if_the_line_had_carried_it(kind: str, steps: list, joins: list,
                                                                   later: float) -> None:
    make, weights = KINDS[kind]
    window = make()
    clock = 1000.0
    ts_all: list[float] = []
    probs_all: list[np.ndarray] = []
    labels_all: list[int] = []
    for clock, ts, probs, labels in played(steps):
        window.advance(clock)
        if ts:
            window.add(batch(ts, probs, labels))
        ts_all += ts
        probs_all += probs
        labels_all += labels
    waiting = [i for i, y in enumerate(labels_all) if y < 0]
    chosen = {waiting[pick % len(waiting)]: label for pick, label in joins} if waiting else {}
    clock += later  # labels arrive later; what left the scope meanwhile takes none
    window.advance(clock)
    if chosen:
        seq = np.asarray(sorted(chosen), dtype=np.int64)
        labels = np.asarray([chosen[i] for i in seq], dtype=np.int64)
        window.label(Labelled.of(np.asarray(ts_all)[seq], seq, np.asarray(probs_all)[seq].reshape(-1, K),
                                 labels, EPS))
    for i, label in chosen.items():
        labels_all[i] = label
    if not ts_all:
        return
    expected = row_total(np.asarray(probs_all), np.asarray(labels_all, dtype=np.int64), EPS,
                         weights(np.asarray(ts_all), clock))
    np.testing.assert_allclose(window.total(), expected, rtol=1e-9, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(reference=st.sampled_from([ReferenceSpec("cumulative"), ReferenceSpec(kind="window", duration_s=120.0),
                                  ReferenceSpec(kind="decay", half_life_s=60.0)]),
       probs=st.lists(distributions(K), min_size=1, max_size=20), later=st.floats(0.0, 500.0))
def test_snapshot_is_a_read_twice_the_same_and_the_state_unchanged(reference, probs, later) -> None:
    model = ModelState("m", model_config(windows=(time_window(60.0), count_window(4)),
                                         reference=reference))
    n = len(probs)
    model.ingest(predictions([1000.0 + i for i in range(n)], probs,
                             [i % (K + 1) - 1 for i in range(n)]), 1000.0)
    model.advance(1000.0 + n + later)
    before = {key: np.array(v, copy=True) for key, v in model.state().items()}
    first, second = model.snapshot(), model.snapshot()
    after = model.state()
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)
    for field in first.__slots__:
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field), err_msg=field)
