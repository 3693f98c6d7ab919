"""Sliding windows as fixed rings: memory bounded by buckets x classes, never by events.

Both window kinds hold *sum rows* (layout in `Layout`): counts and sums over every
prediction, and over the labelled ones the sums the alerting statistics need, so totals
over a window are one `sum(axis=0)` and the divergence step reads every window the same
way. Totals are recomputed from the ring when read (60 rows), not kept as running sums,
so floating-point error cannot creep in over months of adds and subtracts.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]

PRED, LABELLED, LOGLOSS, PROBS = 0, 1, 2, 3
BUCKETS = 60  # a time window's start is rounded to duration / BUCKETS
ECE_BINS = 10


class Layout:
    """Columns of a sum row for k classes. Over every prediction: PRED (count), `probs`
    (sum of p_k), `squares` (sum of p_k^2). Over the labelled ones: LABELLED (count),
    LOGLOSS (sum of -ln max(p(label), epsilon)), `labels` (count per class),
    `labelled_probs` and `labelled_squares` (sums of p_k and p_k^2), `logloss_squares`,
    `brier` (sum of Brier terms), `correct` (argmax == label), and per confidence bin
    (confidence max_k p_k, bin min(floor(10 conf), 9)) `ece_count`, `ece_correct` and
    `ece_confidence` (sum of confidences). The first four keep their v0.1 places."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.probs = slice(PROBS, PROBS + k)
        self.labels = slice(PROBS + k, PROBS + 2 * k)
        self.squares = slice(PROBS + 2 * k, PROBS + 3 * k)
        self.labelled_probs = slice(PROBS + 3 * k, PROBS + 4 * k)
        self.labelled_squares = slice(PROBS + 4 * k, PROBS + 5 * k)
        self.logloss_squares = PROBS + 5 * k
        self.brier = self.logloss_squares + 1
        self.correct = self.brier + 1
        self.ece_count = slice(self.correct + 1, self.correct + 1 + ECE_BINS)
        self.ece_correct = slice(self.ece_count.stop, self.ece_count.stop + ECE_BINS)
        self.ece_confidence = slice(self.ece_correct.stop, self.ece_correct.stop + ECE_BINS)
        self.width = self.ece_confidence.stop
        # Columns summed over every prediction; all others are over labelled ones only.
        self.per_prediction = np.r_[PRED, np.arange(PROBS, PROBS + k),
                                    np.arange(self.squares.start, self.squares.stop)]


def row_width(k: int) -> int:
    return Layout(k).width


def _labelled_terms(probs: Array, labels: npt.NDArray[np.int64], epsilon: float
                    ) -> tuple[Array, Array, Array, npt.NDArray[np.bool_], npt.NDArray[np.int64], Array]:
    """Per labelled row: squares p_k^2, log loss, Brier term, correct, confidence bin and
    confidence. np.argmax takes the lowest index on ties, as DESIGN.md's accuracy does."""
    squares = probs * probs
    picked = probs[np.arange(len(labels)), labels]
    logloss = -np.log(np.maximum(picked, epsilon))
    brier = squares.sum(axis=1) - 2.0 * picked + 1.0
    correct = probs.argmax(axis=1) == labels
    confidence = probs.max(axis=1)
    bins = np.minimum(np.floor(confidence * ECE_BINS), ECE_BINS - 1).astype(np.int64)
    return squares, logloss, brier, correct, bins, confidence


def sum_rows(probs: Array, labels: npt.NDArray[np.int64], epsilon: float) -> Array:
    """One sum row per prediction (labels -1 when unknown)."""
    n, k = probs.shape
    layout = Layout(k)
    rows = np.zeros((n, layout.width))
    rows[:, PRED] = 1.0
    rows[:, layout.probs] = probs
    np.multiply(probs, probs, out=rows[:, layout.squares])
    _put_labels(rows, labels, probs, epsilon, layout)
    return rows


def label_rows(probs: Array, labels: npt.NDArray[np.int64], epsilon: float) -> Array:
    """Sum rows for labels joined later to predictions with these `probs`: the labelled
    sums only, no new prediction."""
    layout = Layout(probs.shape[1])
    rows = np.zeros((len(labels), layout.width))
    _put_labels(rows, labels, probs, epsilon, layout)
    return rows


def _put_labels(rows: Array, labels: npt.NDArray[np.int64], probs: Array, epsilon: float,
                layout: Layout) -> None:
    known = np.flatnonzero(labels >= 0)
    if len(known) == 0:
        return
    y, p = labels[known], probs[known]
    squares, logloss, brier, correct, bins, confidence = _labelled_terms(p, y, epsilon)
    sub = rows[known]
    sub[:, LABELLED] = 1.0
    sub[:, LOGLOSS] = logloss
    sub[np.arange(len(known)), layout.labels.start + y] = 1.0
    sub[:, layout.labelled_probs] = p
    sub[:, layout.labelled_squares] = squares
    sub[:, layout.logloss_squares] = logloss * logloss
    sub[:, layout.brier] = brier
    sub[:, layout.correct] = correct
    at = np.arange(len(known))
    sub[at, layout.ece_count.start + bins] = 1.0
    sub[at, layout.ece_correct.start + bins] = correct
    sub[at, layout.ece_confidence.start + bins] = confidence
    rows[known] = sub


def row_total(probs: Array, labels: npt.NDArray[np.int64], epsilon: float,
              weights: Array | None = None) -> Array:
    """The sum of `sum_rows(probs, labels, epsilon)` (each row times `weights`, when
    given), without building the rows."""
    n, k = probs.shape
    layout = Layout(k)
    w = np.ones(n) if weights is None else weights
    known = np.flatnonzero(labels >= 0)
    y, p, wl = labels[known], probs[known], w[known]
    squares, logloss, brier, correct, bins, confidence = _labelled_terms(p, y, epsilon)
    row = np.zeros(layout.width)
    row[PRED] = w.sum()
    row[layout.probs] = w @ probs
    row[layout.squares] = w @ (probs * probs)
    row[LABELLED] = wl.sum()
    row[LOGLOSS] = wl @ logloss
    row[layout.labels] = np.bincount(y, weights=wl, minlength=k)
    row[layout.labelled_probs] = wl @ p
    row[layout.labelled_squares] = wl @ squares
    row[layout.logloss_squares] = wl @ (logloss * logloss)
    row[layout.brier] = wl @ brier
    row[layout.correct] = wl @ correct
    row[layout.ece_count] = np.bincount(bins, weights=wl, minlength=ECE_BINS)
    row[layout.ece_correct] = np.bincount(bins, weights=wl * correct, minlength=ECE_BINS)
    row[layout.ece_confidence] = np.bincount(bins, weights=wl * confidence, minlength=ECE_BINS)
    return row


def bucket_sums(buckets: npt.NDArray[np.int64], rows: Array) -> tuple[npt.NDArray[np.int64], Array]:
    """Rows summed per bucket: (distinct buckets, their sums). Events arrive nearly in
    time order, so this is one pass of `reduceat` over runs (a sort only when needed),
    much faster than `np.add.at` row by row."""
    if len(buckets) > 1 and (buckets[1:] < buckets[:-1]).any():
        order = np.argsort(buckets, kind="stable")
        buckets, rows = buckets[order], rows[order]
    starts = np.flatnonzero(np.diff(buckets, prepend=buckets[0] - 1))
    return buckets[starts], np.add.reduceat(rows, starts, axis=0)


class TimeWindow:
    """Events with ts in (T - D, T], T the window clock, start rounded up to a bucket."""

    def __init__(self, duration_s: float, k: int, buckets: int = BUCKETS) -> None:
        self.duration_s = duration_s
        self.bucket_s = duration_s / buckets
        self.sums = np.zeros((buckets, row_width(k)))
        self.head: int | None = None  # absolute number of the newest bucket

    def bucket(self, ts: Array | float) -> npt.NDArray[np.int64]:
        return np.floor(np.asarray(ts) / self.bucket_s).astype(np.int64)

    def outside(self, ts: Array, now: Array | float) -> npt.NDArray[np.bool_]:
        """Which events are before the window's start when the clock reads `now`
        (bucket arithmetic, exactly what `add` leaves out)."""
        return self.bucket(ts) <= self.bucket(now) - len(self.sums)

    def start(self) -> float:
        """Event time where the oldest bucket begins (-inf before the first clock)."""
        if self.head is None:
            return -math.inf
        return (self.head - len(self.sums) + 1) * self.bucket_s

    def advance(self, now: float) -> None:
        """Move the clock to `now` (never backwards), emptying the buckets it leaves."""
        head = math.floor(now / self.bucket_s)
        n = len(self.sums)
        if self.head is not None and head <= self.head:
            return
        if self.head is None or head - self.head >= n:
            self.sums[:] = 0.0
        else:
            self.sums[np.arange(self.head + 1, head + 1) % n] = 0.0
        self.head = head

    def add(self, ts: Array, rows: Array) -> None:
        """Add rows at event times `ts`; those already out of the window are left out."""
        if self.head is None or len(ts) == 0:
            return
        n = len(self.sums)
        b = self.bucket(ts)
        keep = (b > self.head - n) & (b <= self.head)  # see `outside`
        if not keep.any():
            return
        if not keep.all():
            b, rows = b[keep], rows[keep]
        buckets, sums = bucket_sums(b, rows)
        self.sums[buckets % n] += sums

    def total(self) -> Array:
        return self.sums.sum(axis=0)

    def weighted_total(self, weights: Callable[[Array], Array]) -> tuple[Array, Array]:
        """Sum of the rows weighted by `weights(t)` (non-decreasing in t), and the sums of
        squared weights over predictions and over labelled ones. A bucket does not know its
        events' times: its sums take the weight at its end and its squares the weight at
        its start, so what is left when these are subtracted from a decayed reference has
        no more weight, and no fewer squares, than it really has (a smaller effective
        sample size, never a larger one)."""
        if self.head is None:
            return np.zeros(self.sums.shape[1]), np.zeros(2)
        n = len(self.sums)
        numbers = np.arange(self.head - n + 1, self.head + 1).astype(np.float64)
        rows = self.sums[numbers.astype(np.int64) % n]
        start = weights(numbers * self.bucket_s)
        end = weights((numbers + 1.0) * self.bucket_s)
        return end @ rows, (start * start) @ rows[:, [PRED, LABELLED]]

    def state(self) -> dict[str, Array]:
        return {"sums": self.sums, "head": np.array([-1 if self.head is None else self.head])}

    def restore(self, state: dict[str, Array]) -> None:
        self.sums[:] = state["sums"]
        head = int(state["head"][0])
        self.head = None if head < 0 else head


class CountWindow:
    """Exactly the model's last `count` predictions, one ring row per prediction.

    Eviction needs each evicted vector exactly, so the ring holds every row (float64;
    float32 would put B off by ~1e-8), with its event time (to tell which rows are also
    in the reference). The sums are computed from the rows when read, instead of being
    stored: the ring is most of a model's memory."""

    def __init__(self, count: int, k: int, epsilon: float = 1e-12) -> None:
        self.count = count
        self.k = k
        self.epsilon = epsilon
        self.ts = np.zeros(count)
        self.probs = np.zeros((count, k))
        self.labels = np.full(count, -1, dtype=np.int16 if k < 2**15 else np.int32)
        self.seen = 0  # predictions ever added: the sequence number of the next one

    def add(self, ts: Array, probs: Array, labels: npt.NDArray[np.int64]) -> None:
        n = len(probs)
        if n > self.count:
            skip = n - self.count
            ts, probs, labels = ts[skip:], probs[skip:], labels[skip:]
            self.seen += skip
            n = self.count
        pos = (self.seen + np.arange(n)) % self.count
        self.ts[pos] = ts
        self.probs[pos] = probs
        self.labels[pos] = labels
        self.seen += n

    def set_labels(self, seq: npt.NDArray[np.int64], labels: npt.NDArray[np.int64]) -> None:
        """Label predictions by sequence number; those not in the window are ignored."""
        inside = (seq >= self.seen - self.count) & (seq < self.seen)
        self.labels[seq[inside] % self.count] = labels[inside]

    def _held(self) -> slice:
        return slice(0, min(self.seen, self.count))

    def total(self) -> Array:
        held = self._held()
        return row_total(self.probs[held], self.labels[held].astype(np.int64), self.epsilon)

    def weighted_total(self, weights: Callable[[Array], Array]) -> tuple[Array, Array]:
        """As TimeWindow.weighted_total, each row weighted by `weights` of its event time."""
        held = self._held()
        labels = self.labels[held].astype(np.int64)
        w = weights(self.ts[held])
        w2 = w * w
        return (row_total(self.probs[held], labels, self.epsilon, w),
                np.array([w2.sum(), w2[labels >= 0].sum()]))

    def state(self) -> dict[str, Array]:
        return {"ts": self.ts, "probs": self.probs, "labels": self.labels,
                "seen": np.array([self.seen])}

    def restore(self, state: dict[str, Array]) -> None:
        self.ts[:] = state["ts"]
        self.probs[:] = state["probs"]
        self.labels[:] = state["labels"]
        self.seen = int(state["seen"][0])
