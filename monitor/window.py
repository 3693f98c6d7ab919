"""Sliding windows as fixed rings: memory bounded by buckets x classes, never by events.

Both window kinds hold *sum rows*: `[predictions, labelled, log-loss sum, probs (K),
label counts (K)]`, so totals over a window are one `sum(axis=0)` and the divergence
step reads every window the same way. Totals are recomputed from the ring when read
(60 rows), not kept as running sums, so floating-point error cannot creep in over
months of adds and subtracts.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from monitor import schema

Array = npt.NDArray[np.float64]

PRED, LABELLED, LOGLOSS, PROBS = 0, 1, 2, 3
BUCKETS = 60  # a time window's start is rounded to duration / BUCKETS


def row_width(k: int) -> int:
    return PROBS + 2 * k


def sum_rows(probs: Array, labels: npt.NDArray[np.int64], logloss: Array) -> Array:
    """One sum row per prediction (labels -1 when unknown; logloss ignored there)."""
    n, k = probs.shape
    rows = np.zeros((n, row_width(k)))
    rows[:, PRED] = 1.0
    rows[:, PROBS:PROBS + k] = probs
    add_labels(rows, labels, logloss, k)
    return rows


def label_rows(labels: npt.NDArray[np.int64], logloss: Array, k: int) -> Array:
    """Sum rows for labels joined later: labels and log loss only, no new prediction."""
    rows = np.zeros((len(labels), row_width(k)))
    add_labels(rows, labels, logloss, k)
    return rows


def add_labels(rows: Array, labels: npt.NDArray[np.int64], logloss: Array, k: int) -> None:
    known = np.flatnonzero(labels >= 0)
    rows[known, LABELLED] = 1.0
    rows[known, LOGLOSS] = logloss[known]
    rows[known, PROBS + k + labels[known]] = 1.0


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

    def state(self) -> dict[str, Array]:
        return {"sums": self.sums, "head": np.array([-1 if self.head is None else self.head])}

    def restore(self, state: dict[str, Array]) -> None:
        self.sums[:] = state["sums"]
        head = int(state["head"][0])
        self.head = None if head < 0 else head


class CountWindow:
    """Exactly the model's last `count` predictions, one ring row per prediction.

    Eviction needs each evicted vector exactly, so the ring holds every row (float64;
    float32 would put B off by ~1e-8). Log loss is recomputed from the row and its label
    when read, instead of being stored: the ring is most of a model's memory."""

    def __init__(self, count: int, k: int, epsilon: float = 1e-12) -> None:
        self.count = count
        self.k = k
        self.epsilon = epsilon
        self.probs = np.zeros((count, k))
        self.labels = np.full(count, -1, dtype=np.int16 if k < 2**15 else np.int32)
        self.seen = 0  # predictions ever added: the sequence number of the next one

    def add(self, probs: Array, labels: npt.NDArray[np.int64]) -> None:
        n = len(probs)
        if n > self.count:
            skip = n - self.count
            probs, labels = probs[skip:], labels[skip:]
            self.seen += skip
            n = self.count
        pos = (self.seen + np.arange(n)) % self.count
        self.probs[pos] = probs
        self.labels[pos] = labels
        self.seen += n

    def set_labels(self, seq: npt.NDArray[np.int64], labels: npt.NDArray[np.int64]) -> None:
        """Label predictions by sequence number; those not in the window are ignored."""
        inside = (seq >= self.seen - self.count) & (seq < self.seen)
        self.labels[seq[inside] % self.count] = labels[inside]

    def total(self) -> Array:
        k = self.k
        row = np.zeros(row_width(k))
        known = np.flatnonzero(self.labels >= 0)
        labels = self.labels[known]
        row[PRED] = min(self.seen, self.count)
        row[LABELLED] = len(known)
        row[LOGLOSS] = -np.log(np.maximum(self.probs[known, labels], self.epsilon)).sum()
        row[PROBS:PROBS + k] = self.probs.sum(axis=0)
        row[PROBS + k:] = np.bincount(labels, minlength=k)
        return row

    def state(self) -> dict[str, Array]:
        return {"probs": self.probs, "labels": self.labels, "seen": np.array([self.seen])}

    def restore(self, state: dict[str, Array]) -> None:
        schema.within(state["labels"], -1, self.k, "count window labels")
        schema.within(state["seen"], 0, 2**62, "count window seen")
        self.probs[:] = state["probs"]
        self.labels[:] = state["labels"]
        self.seen = int(state["seen"][0])
