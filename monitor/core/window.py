"""Sliding windows as fixed rings: memory bounded by buckets x classes, never by events.

Both window kinds hold *sum rows* (layout in `Layout`): counts and sums over every
prediction, and over the labelled ones the sums the alerting statistics need, so totals
over a window are one `sum(axis=0)` and the divergence step reads every window the same
way. Totals are recomputed from the ring when read (60 rows), not kept as running sums,
so floating-point error cannot creep in over months of adds and subtracts.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from monitor.core import schema

Array = npt.NDArray[np.float64]
Covers = Callable[[Array], npt.NDArray[np.bool_]]

PRED, LABELLED, LOGLOSS, PROBS = 0, 1, 2, 3
BUCKETS = 60  # a time window's start is rounded to duration / BUCKETS
ECE_BINS = 10
BLOCK_LOGLOSS = 1  # LOGLOSS's place in a `label_rows` block (after LABELLED)


class Layout:
    """Columns of a sum row for k classes. Over every prediction: PRED (count), `probs`
    (sum of p_k), `squares` (sum of p_k^2). Over the labelled ones: LABELLED (count),
    LOGLOSS (sum of -ln max(p(label), epsilon)), `labels` (count per class),
    `labelled_probs` and `labelled_squares` (sums of p_k and p_k^2), `logloss_squares`,
    `brier` (sum of Brier terms), `correct` (argmax == label), and per confidence bin
    (confidence max_k p_k, bin min(floor(10 conf), 9)) `ece_count`, `ece_correct` and
    `ece_confidence` (sum of confidences). After PRED, LABELLED, LOGLOSS and `probs`
    (their v0.1 places) the per-prediction columns end and the labelled ones follow, so
    each kind is one block (`per_prediction`, `labelled`)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.probs = slice(PROBS, PROBS + k)
        self.squares = slice(PROBS + k, PROBS + 2 * k)
        self.labels = slice(PROBS + 2 * k, PROBS + 3 * k)
        self.labelled_probs = slice(PROBS + 3 * k, PROBS + 4 * k)
        self.labelled_squares = slice(PROBS + 4 * k, PROBS + 5 * k)
        self.logloss_squares = PROBS + 5 * k
        self.brier = self.logloss_squares + 1
        self.correct = self.brier + 1
        self.ece_count = slice(self.correct + 1, self.correct + 1 + ECE_BINS)
        self.ece_correct = slice(self.ece_count.stop, self.ece_count.stop + ECE_BINS)
        self.ece_confidence = slice(self.ece_correct.stop, self.ece_correct.stop + ECE_BINS)
        self.width = self.ece_confidence.stop
        self.per_prediction = np.r_[PRED, PROBS:PROBS + 2 * k]
        self.labelled = np.r_[LABELLED, LOGLOSS, PROBS + 2 * k:self.width]


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


def prediction_rows(probs: Array) -> Array:
    """What every prediction adds, labelled or not: the columns `Layout.per_prediction`
    (count, p_k, p_k^2), one row per prediction. The other columns are zero for an
    unlabelled prediction, so they are built for labelled ones only (`label_rows`)."""
    n, k = probs.shape
    rows = np.empty((n, 1 + 2 * k))
    rows[:, 0] = 1.0
    rows[:, 1:1 + k] = probs
    np.multiply(probs, probs, out=rows[:, 1 + k:])
    return rows


def label_rows(probs: Array, labels: npt.NDArray[np.int64], epsilon: float) -> Array:
    """What labelled predictions (every label >= 0) with these `probs` add: the columns
    `Layout.labelled`, one row each; for labels in the prediction log and labels joined
    later alike."""
    n, k = probs.shape
    layout = Layout(k)
    rows = np.zeros((n, len(layout.labelled)))
    squares, logloss, brier, correct, bins, confidence = _labelled_terms(probs, labels, epsilon)
    shift = PROBS + 2 * k - 2  # a column's place in the block: layout.labelled[2:] is contiguous
    at = np.arange(n)
    rows[:, 0] = 1.0
    rows[:, BLOCK_LOGLOSS] = logloss
    rows[at, layout.labels.start - shift + labels] = 1.0
    rows[:, layout.labelled_probs.start - shift:layout.labelled_probs.stop - shift] = probs
    rows[:, layout.labelled_squares.start - shift:layout.labelled_squares.stop - shift] = squares
    rows[:, layout.logloss_squares - shift] = logloss * logloss
    rows[:, layout.brier - shift] = brier
    rows[:, layout.correct - shift] = correct
    rows[at, layout.ece_count.start - shift + bins] = 1.0
    rows[at, layout.ece_correct.start - shift + bins] = correct
    rows[at, layout.ece_confidence.start - shift + bins] = confidence
    return rows


def row_total(probs: Array, labels: npt.NDArray[np.int64], epsilon: float,
              weights: Array | None = None) -> Array:
    """The sum of the rows of these predictions (`prediction_rows` in its columns plus
    `label_rows` of the labelled ones; each row times `weights`, when given), without
    building the rows. Plain reductions, not matrix products: those go through a
    multi-threaded BLAS that a loaded machine makes slower, not faster."""
    n, k = probs.shape
    layout = Layout(k)
    known = np.flatnonzero(labels >= 0)
    y, p = labels[known], probs[known]
    squares, logloss, brier, correct, bins, confidence = _labelled_terms(p, y, epsilon)
    wl = np.ones(len(known)) if weights is None else weights[known]

    def total(w: Array | None, values: Array) -> Array:
        if w is None:
            return values.sum(axis=0)
        return np.einsum("i,i...->...", w, values)

    row = np.zeros(layout.width)
    row[PRED] = n if weights is None else weights.sum()
    row[layout.probs] = total(weights, probs)
    row[layout.squares] = total(weights, probs * probs)
    row[LABELLED] = wl.sum()
    row[LOGLOSS] = total(wl, logloss)
    row[layout.labels] = np.bincount(y, weights=wl, minlength=k)
    row[layout.labelled_probs] = total(wl, p)
    row[layout.labelled_squares] = total(wl, squares)
    row[layout.logloss_squares] = total(wl, logloss * logloss)
    row[layout.brier] = total(wl, brier)
    row[layout.correct] = total(wl, correct.astype(np.float64))
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


@dataclass(frozen=True, slots=True)
class Added:
    """New predictions in arrival order, as every window takes them: their rows are
    built once per batch, not once per window (see `prediction_rows`, `label_rows`)."""

    ts: Array
    probs: Array
    labels: npt.NDArray[np.int64]  # -1: not labelled (yet)
    predicted: Array  # prediction_rows(probs)
    labelled_ts: Array  # ts of the labelled ones
    labelled: Array  # their label_rows

    @classmethod
    def of(cls, ts: Array, probs: Array, labels: npt.NDArray[np.int64], epsilon: float) -> Added:
        known = np.flatnonzero(labels >= 0)
        return cls(ts, probs, labels, prediction_rows(probs), ts[known],
                   label_rows(probs[known], labels[known], epsilon))


@dataclass(frozen=True, slots=True)
class Labelled:
    """Labels joined to earlier predictions: the prediction's time and sequence number,
    the label, and what it adds (`label_rows`)."""

    ts: Array
    seq: npt.NDArray[np.int64]
    labels: npt.NDArray[np.int64]
    rows: Array

    @classmethod
    def of(cls, ts: Array, seq: npt.NDArray[np.int64], probs: Array,
           labels: npt.NDArray[np.int64], epsilon: float) -> Labelled:
        return cls(ts, seq, labels, label_rows(probs, labels, epsilon))


class Window(Protocol):
    """Sum rows over some scope of a model's predictions: every window kind, and every
    reference kind (reference.py), is fed and read through this alone."""

    def advance(self, now: float) -> None:
        """Move the clock to `now` (never backwards): what leaves the scope leaves."""

    def add(self, batch: Added) -> None:
        """Take new predictions (those already out of scope are left out)."""

    def label(self, joined: Labelled) -> None:
        """Take labels joined to earlier predictions still in scope."""

    def start_at(self, seq: int) -> None:
        """Number the next prediction `seq` (a window started after the first ones)."""

    def total(self) -> Array:
        """The sum row over the scope, recomputed (never a running sum)."""

    def state(self) -> dict[str, Array]:
        """Arrays `restore` takes back exactly."""

    def restore(self, state: dict[str, Array]) -> None: ...


class Recent(Window, Protocol):
    """A window the metrics are computed over (time or count): also says which events
    are late to it and what of it another scope holds."""

    duration_s: float  # the event-time span it holds at most (inf: a count window)

    def outside(self, ts: Array, now: Array | float) -> npt.NDArray[np.bool_]:
        """Which events at `ts` are before the start when the clock reads `now`."""

    def weighted_total(self, weights: Callable[[Array], Array]) -> tuple[Array, Array]:
        """The sum row with each event weighted by `weights` of its time, and the sums of
        squared weights over predictions and over labelled ones."""

    def within(self, total: Array, start: float, covers: Covers) -> Array | None:
        """Of this window's sums (`total`), those over events a time reference holds
        (starting at `start`; `covers(ts)` says which); None when that cannot be told."""


class ByTime(ABC):
    """A window (or reference) that keeps rows by event time: new predictions and labels
    joined later are both `add_rows` into their columns, and nothing is numbered."""

    layout: Layout

    @abstractmethod
    def add_rows(self, ts: Array, rows: Array, columns: npt.NDArray[np.int64] | None = None) -> None:
        """Add rows at event times `ts` (only into `columns`, when given)."""

    def add(self, batch: Added) -> None:
        self.add_rows(batch.ts, batch.predicted, self.layout.per_prediction)
        self.add_rows(batch.labelled_ts, batch.labelled, self.layout.labelled)

    def label(self, joined: Labelled) -> None:
        self.add_rows(joined.ts, joined.rows, self.layout.labelled)

    def start_at(self, seq: int) -> None:  # noqa: B027  (empty on purpose, not abstract)
        """Kept by time: predictions are not numbered."""


class TimeWindow(ByTime):
    """Events with ts in (T - D, T], T the window clock, start rounded up to a bucket."""

    def __init__(self, duration_s: float, k: int, buckets: int = BUCKETS) -> None:
        self.duration_s = duration_s
        self.bucket_s = duration_s / buckets
        self.layout = Layout(k)
        self.sums = np.zeros((buckets, self.layout.width))
        self.head: int | None = None  # absolute number of the newest bucket

    def bucket(self, ts: Array | float) -> npt.NDArray[np.int64]:
        return np.floor(np.asarray(ts) / self.bucket_s).astype(np.int64)

    def outside(self, ts: Array, now: Array | float) -> npt.NDArray[np.bool_]:
        """Which events are before the window's start when the clock reads `now`
        (bucket arithmetic, exactly what `add` leaves out)."""
        return self.bucket(ts) <= self.bucket(now) - len(self.sums)

    def covers(self, ts: Array) -> npt.NDArray[np.bool_]:
        """Which events at `ts` are in the window as its clock reads (none before the
        first clock): `~outside(ts, T)`."""
        if self.head is None:
            return np.zeros(len(ts), dtype=bool)
        return self.bucket(ts) > self.head - len(self.sums)

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

    def add_rows(self, ts: Array, rows: Array, columns: npt.NDArray[np.int64] | None = None) -> None:
        """Add rows at event times `ts` (only into `columns`, when given); those already
        out of the window are left out."""
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
        if columns is None:
            self.sums[buckets % n] += sums
        else:
            self.sums[np.ix_(buckets % n, columns)] += sums

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

    def within(self, total: Array, start: float, covers: Covers) -> Array | None:
        """All of it when it starts no earlier than the reference (a bucket cannot be
        split by event time, so otherwise None)."""
        return None if self.start() < start else total

    def rest(self, window: Recent, total: Array) -> Array | None:
        """As a reference (see reference.Reference.rest): what the window holds of it is
        subtracted; None when the window cannot tell."""
        inside = window.within(total, self.start(), self.covers)
        if inside is None:
            return None  # the reference lies inside the window: nothing is outside it
        return np.maximum(self.total() - inside, 0.0)

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
        self.duration_s = math.inf
        self.k = k
        self.epsilon = epsilon
        self.ts = np.zeros(count)
        self.probs = np.zeros((count, k))
        self.labels = np.full(count, -1, dtype=np.int16 if k < 2**15 else np.int32)
        self.seen = 0  # predictions ever added: the sequence number of the next one
        self.first = 0  # the sequence number of the first (see `start_at`)

    def start_at(self, seq: int) -> None:
        """Empty, numbered from `seq`: a window started after the model's first
        predictions, so that labels joined later land on the right rows."""
        self.seen = self.first = seq

    def advance(self, now: float) -> None:
        """A count window holds its last `count` predictions whatever the clock reads."""

    def outside(self, ts: Array, now: Array | float) -> npt.NDArray[np.bool_]:
        """No prediction is late to a count window."""
        return np.zeros(len(ts), dtype=bool)

    def add(self, batch: Added) -> None:
        ts, probs, labels = batch.ts, batch.probs, batch.labels
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

    def label(self, joined: Labelled) -> None:
        """Label predictions by sequence number; those not in the window are ignored."""
        seq = joined.seq
        inside = (seq >= max(self.seen - self.count, self.first)) & (seq < self.seen)
        self.labels[seq[inside] % self.count] = joined.labels[inside]

    def _held(self) -> slice | npt.NDArray[np.int64]:
        """The ring rows that hold predictions: those of the last min(added, count)."""
        n = min(self.seen - self.first, self.count)
        start = (self.seen - n) % self.count
        if start + n <= self.count:
            return slice(start, start + n)
        return np.arange(self.seen - n, self.seen) % self.count

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

    def within(self, total: Array, start: float, covers: Covers) -> Array | None:
        """Each row knows its event time: those the reference covers, exactly."""
        inside, _ = self.weighted_total(lambda ts: covers(ts).astype(np.float64))
        return inside

    def state(self) -> dict[str, Array]:
        return {"ts": self.ts, "probs": self.probs, "labels": self.labels,
                "seen": np.array([self.seen]), "first": np.array([self.first])}

    def restore(self, state: dict[str, Array]) -> None:
        schema.within(state["labels"], -1, self.k, "count window labels")
        schema.within(state["seen"], 0, 2**62, "count window seen")
        schema.within(state["first"], 0, int(state["seen"][0]) + 1, "count window first")
        self.ts[:] = state["ts"]
        self.probs[:] = state["probs"]
        self.labels[:] = state["labels"]
        self.seen = int(state["seen"][0])
        self.first = int(state["first"][0])
