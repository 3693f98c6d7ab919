"""reference.py: the scope of A (and B_ref) against brute force over raw labelled events."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pytest import approx

from monitor.core.aggregate import ModelState
from monitor.core.reference import Cumulative, Decay, make_reference
from monitor.core.settings import ReferenceSpec
from monitor.core.window import LABELLED, TimeWindow

from .strategies import (
    FAST,
    Totals,
    distributions,
    in_time_window,
    model_config,
    predictions,
    sum_rows,
)

K = 3

labelled_events = st.lists(
    st.tuples(st.floats(0.0, 10_000.0), distributions(K), st.integers(-1, K - 1)),
    min_size=1, max_size=30)


def rows_of(events_: list) -> tuple[np.ndarray, np.ndarray]:
    ts = np.array([e[0] for e in events_])
    probs = np.array([e[1] for e in events_])
    labels = np.array([e[2] for e in events_], dtype=np.int64)
    return ts, sum_rows(probs, labels, 1e-12)


def feed(reference, events_: list, clock: float) -> float:
    """Arrival order; the reference clock is the running max of event times (and `clock`)."""
    for event in events_:
        clock = max(clock, event[0])
        reference.advance(clock)
        ts, rows = rows_of([event])
        reference.add_rows(ts, rows)
    return clock


@FAST
@given(labelled_events, st.floats(0.0, 5_000.0), st.sampled_from([1.0, 60.0, 3600.0, 21600.0]))
def test_decay_weighs_each_event_two_to_the_minus_age_over_half_life(events_, extra, half_life):
    decay = Decay(half_life, K)
    clock = feed(decay, events_, -math.inf)
    now = clock + extra  # the injected window clock T
    decay.advance(now)
    weights = [2.0 ** (-(now - ts) / half_life) for ts, _, _ in events_]
    Totals.of(K, events_, weights=weights).assert_matches(decay.total(), rel=1e-9, abs_=1e-12)


def test_decay_label_one_half_life_old_weighs_one_half():
    model = ModelState("m", model_config(reference=ReferenceSpec("decay", half_life_s=3600.0)))
    model.ingest(predictions([1000.0, 4600.0], [[1, 0, 0], [0, 1, 0]], [0, 1]), now=0.0)
    snapshot = model.advance(4600.0).snapshot()
    assert snapshot.reference_labels == approx(1.5)
    # A is the weighted label distribution: class 0 weighs 0.5, class 1 weighs 1.
    assert snapshot.reference_entropy == approx(-(1 / 3) * math.log(1 / 3) - (2 / 3) * math.log(2 / 3))
    assert model.advance(4600.0 + 7200.0).snapshot().reference_labels == approx(1.5 / 4)


def test_decay_label_older_than_the_clock_gets_its_age_weight_at_once():
    decay = Decay(60.0, K)
    decay.advance(100.0)
    ts, rows = rows_of([(40.0, np.array([1.0, 0.0, 0.0]), 0)])
    decay.add_rows(ts, rows)
    assert decay.total()[LABELLED] == approx(0.5)


@FAST
@given(labelled_events, st.lists(st.floats(0.0, 2_000.0), max_size=5))
def test_window_reference_holds_the_labels_of_its_duration_bucketed_like_a_window(events_, ticks):
    duration = 600.0
    reference = make_reference(ReferenceSpec("window", duration_s=duration), K)
    assert isinstance(reference, TimeWindow)
    clock = feed(reference, events_, -math.inf)
    for tick in [0.0, *ticks]:
        clock += tick
        reference.advance(clock)
        inside = [e for e in events_ if in_time_window(e[0], clock, duration)]
        Totals.of(K, inside).assert_matches(reference.total())


@FAST
@given(labelled_events)
def test_cumulative_reference_holds_every_event_whatever_its_time(events_):
    reference = make_reference(ReferenceSpec("cumulative"), K)
    assert isinstance(reference, Cumulative)
    feed(reference, events_, -math.inf)
    reference.advance(1e12)
    Totals.of(K, events_).assert_matches(reference.total())


def test_static_reference_keeps_every_prediction_for_b_ref():
    reference = make_reference(ReferenceSpec("static", prior=(0.2, 0.3, 0.5)), K)
    assert isinstance(reference, Cumulative)


@pytest.mark.parametrize("spec", [
    ReferenceSpec("cumulative"),
    ReferenceSpec("window", duration_s=600.0),
    ReferenceSpec("decay", half_life_s=300.0),
])
@FAST
@given(events_=labelled_events, cut=st.integers(0, 30), extra=st.floats(0.0, 1_000.0))
def test_state_restore_round_trip_continues_identically(spec, events_, cut, extra):
    first, second = events_[:cut], events_[cut:]
    original = make_reference(spec, K)
    clock = feed(original, first, -math.inf)
    restored = make_reference(spec, K)
    restored.restore({key: np.array(v, copy=True) for key, v in original.state().items()})
    assert restored.total() == approx(original.total(), rel=1e-12, abs=1e-12)
    for reference in (original, restored):
        end = feed(reference, second, clock)
        reference.advance(end + extra)
    assert restored.total() == approx(original.total(), rel=1e-12, abs=1e-12)


def test_decay_state_before_any_event_restores_to_no_clock():
    fresh = Decay(60.0, K)
    restored = Decay(60.0, K)
    restored.restore(fresh.state())
    assert restored.anchor is None
    assert not restored.total().any()
