"""Hypothesis strategies and small builders shared by the unit tests.

Everything here is test-side: oracles are written from DESIGN.md, not from the code.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

from monitor.core.parse import Predictions
from monitor.core.settings import ModelConfig, ReferenceSpec, WindowSpec

# Fast enough for the whole unit suite to stay well under a minute.
FAST = settings(max_examples=150, deadline=None)
SLOW = settings(max_examples=60, deadline=None)

EPS = 1e-12


def normalise(xs: list[float]) -> np.ndarray:
    a = np.asarray(xs, dtype=np.float64)
    return a / a.sum()


@st.composite
def distributions(draw: st.DrawFn, k: int, zeros: bool = True) -> np.ndarray:
    """A probability vector of length k; with `zeros`, some entries exactly 0."""
    positive = st.floats(1e-6, 1.0)
    entry = st.one_of(st.just(0.0), positive) if zeros else positive
    xs = draw(st.lists(entry, min_size=k, max_size=k).filter(lambda v: sum(v) > 0))
    return normalise(xs)


@st.composite
def distribution_pairs(draw: st.DrawFn, zeros_a: bool = True, zeros_b: bool = False,
                       k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    k = draw(st.integers(2, 8)) if k is None else k
    return draw(distributions(k, zeros_a)), draw(distributions(k, zeros_b))


def model_config(classes: tuple[str, ...] = ("a", "b", "c"), windows: tuple[WindowSpec, ...] = (),
                 reference: ReferenceSpec | None = None, min_samples: int = 0,
                 smoothing: float = 0.0, epsilon: float = EPS) -> ModelConfig:
    return ModelConfig(
        classes=classes,
        windows=windows or (time_window(60.0), time_window(300.0), count_window(7)),
        reference=reference or ReferenceSpec("cumulative"),
        min_samples=min_samples,
        smoothing=smoothing,
        epsilon=epsilon,
    )


def time_window(duration_s: float) -> WindowSpec:
    return WindowSpec(f"{duration_s:g}s", duration_s=duration_s)


def count_window(n: int) -> WindowSpec:
    return WindowSpec(f"count:{n}", count=n)


def predictions(ts: list[float], probs: list[np.ndarray] | np.ndarray, labels: list[int],
                ids: list[str | None] | None = None, model: str = "m") -> Predictions:
    n = len(ts)
    return Predictions(
        model=model,
        index=np.arange(n, dtype=np.int64),
        ts=np.asarray(ts, dtype=np.float64),
        probs=np.asarray(probs, dtype=np.float64).reshape(n, -1),
        labels=np.asarray(labels, dtype=np.int64),
        ids=list(ids) if ids is not None else [None] * n,
    )


def bucket(ts: float, bucket_s: float) -> int:
    """DESIGN.md: a time window's start is rounded to a bucket of duration / 60."""
    return math.floor(ts / bucket_s)


def in_time_window(ts: float, clock: float, duration_s: float) -> bool:
    """The documented membership rule with its rounding: the event's bucket is one of the
    60 buckets ending with the clock's bucket."""
    bucket_s = duration_s / 60
    b, head = bucket(ts, bucket_s), bucket(clock, bucket_s)
    return head - 60 < b <= head


class Totals:
    """What a window (or reference) holds, summed from raw events: the oracle."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.predictions = 0.0
        self.labelled = 0.0
        self.logloss = 0.0
        self.probs = np.zeros(k)
        self.labels = np.zeros(k)
        self.squares = np.zeros(k)
        self.labelled_probs = np.zeros(k)
        self.labelled_squares = np.zeros(k)
        self.logloss_squares = 0.0
        self.brier = 0.0
        self.correct = 0.0
        self.ece_count = np.zeros(10)
        self.ece_correct = np.zeros(10)
        self.ece_confidence = np.zeros(10)

    @classmethod
    def of(cls, k: int, events: list[tuple[float, np.ndarray, int]], epsilon: float = EPS,
           weights: list[float] | None = None) -> Totals:
        t = cls(k)
        for i, (_, probs, label) in enumerate(events):
            w = 1.0 if weights is None else weights[i]
            t.predictions += w
            t.probs += w * probs
            t.squares += w * probs ** 2
            if label >= 0:
                loss = -math.log(max(probs[label], epsilon))
                onehot = np.eye(k)[label]
                confidence = max(probs)
                argmax = list(probs).index(confidence)  # the lowest index on ties
                b = min(math.floor(confidence * 10), 9)
                t.labelled += w
                t.labels[label] += w
                t.logloss += w * loss
                t.logloss_squares += w * loss ** 2
                t.labelled_probs += w * probs
                t.labelled_squares += w * probs ** 2
                t.brier += w * float(((probs - onehot) ** 2).sum())
                t.correct += w * (argmax == label)
                t.ece_count[b] += w
                t.ece_correct[b] += w * (argmax == label)
                t.ece_confidence[b] += w * confidence
        return t

    def assert_matches(self, row: np.ndarray, rel: float = 1e-9, abs_: float = 1e-9) -> None:
        """`row` in window.py's layout (see `Layout`)."""
        from pytest import approx

        from monitor.core.window import LABELLED, LOGLOSS, PRED, Layout

        lay = Layout(self.k)
        assert len(row) == lay.width
        assert row[PRED] == approx(self.predictions, rel=rel, abs=abs_)
        assert row[LABELLED] == approx(self.labelled, rel=rel, abs=abs_)
        assert row[LOGLOSS] == approx(self.logloss, rel=rel, abs=abs_)
        for name in ("probs", "labels", "squares", "labelled_probs", "labelled_squares",
                     "logloss_squares", "brier", "correct", "ece_count", "ece_correct",
                     "ece_confidence"):
            assert row[getattr(lay, name)] == approx(getattr(self, name), rel=rel, abs=abs_), name


def sum_rows(probs: np.ndarray, labels: np.ndarray, epsilon: float = EPS) -> np.ndarray:
    """Full-width sum rows of a batch (window.py's layout), from the two blocks ingest adds."""
    from monitor.core.window import Layout, label_rows, prediction_rows

    layout = Layout(probs.shape[1])
    rows = np.zeros((len(probs), layout.width))
    rows[:, layout.per_prediction] = prediction_rows(probs)
    known = np.flatnonzero(labels >= 0)
    rows[np.ix_(known, layout.labelled)] = label_rows(probs[known], labels[known], epsilon)
    return rows


def line(**fields: object) -> bytes:
    """One JSON line (no newline), as a model server would write it."""
    import json

    return json.dumps(fields).encode()


def assert_same_snapshot(a: object, b: object) -> None:
    """Two ModelSnapshots (or Snapshots) hold the same values; NaN equals NaN."""
    import dataclasses

    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, tuple) and x and dataclasses.is_dataclass(x[0]):
            assert len(x) == len(y), f.name
            for u, v in zip(x, y):
                assert_same_snapshot(u, v)
        elif isinstance(x, np.ndarray | float):
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12, err_msg=f.name)
        else:
            assert x == y, f.name


def block(lines: list[bytes]) -> tuple[bytes, int]:
    """Complete lines as the tailer hands them on: one bytes block and its line count."""
    return b"".join(x + b"\n" for x in lines), len(lines)


def ingest_predictions(aggregator, source, lines: list[bytes], now: float,
                       arrival: float | None = None):
    data, n = block(lines)
    return aggregator.ingest_predictions(source, data, n, now, now if arrival is None else arrival)


def ingest_labels(aggregator, source, lines: list[bytes], now: float, arrival: float | None = None):
    data, n = block(lines)
    return aggregator.ingest_labels(source, data, n, now, now if arrival is None else arrival)
