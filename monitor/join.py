"""Joining delayed labels to their predictions by request id. Pure: no clock, no I/O.

Per model, predictions with an id and no label wait in a bounded store until their label
arrives; a label that arrives first waits too. Both are bounded by `max_pending` (the
oldest evicted first) and by `join_ttl` in event time; what leaves unjoined is counted
as expired. Recently joined ids are remembered (bounded the same way) so that a second
label for the same id is recognised as a duplicate: the first label counts.

Waiting predictions keep their time, sequence number and probability vector in numpy
arrays (slots reused through a free list), so memory is about max_pending x (K + 2)
floats plus the id index, whatever the traffic.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


@dataclass(slots=True)
class Joined:
    """Labels matched to predictions: the prediction's time, sequence number and probs."""

    ts: Array
    seq: npt.NDArray[np.int64]
    labels: npt.NDArray[np.int64]
    probs: Array


class JoinStore:
    def __init__(self, k: int, ttl_s: float, max_pending: int) -> None:
        self.k = k
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        # id -> slot in the arrays below, oldest first (insertion order = arrival order).
        self.waiting: OrderedDict[str, int] = OrderedDict()
        self.ts = np.zeros(0)
        self.seq = np.zeros(0, dtype=np.int64)
        self.probs = np.zeros((0, k))
        self.free: list[int] = []
        # id -> (label, label time): labels that came before their prediction.
        self.early: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self.joined: OrderedDict[str, None] = OrderedDict()
        self.joins = 0
        self.expired = 0
        self.duplicates = 0

    @property
    def pending(self) -> int:
        return len(self.waiting)

    def add_predictions(self, ids: list[str], ts: Array, seq: npt.NDArray[np.int64],
                        probs: Array) -> Joined:
        """Unlabelled predictions with ids: join those whose label already came, keep
        the rest waiting. Returns the joins made."""
        out_rows: list[int] = []
        out_labels: list[int] = []
        for row, request_id in enumerate(ids):
            early = self.early.pop(request_id, None)
            if early is not None:
                out_rows.append(row)
                out_labels.append(early[0])
                self._remember_joined(request_id)
                continue
            if request_id in self.waiting or request_id in self.joined:
                continue  # the same id predicted twice: the first one waits for the label
            while len(self.waiting) >= self.max_pending:
                self._evict(self.waiting.popitem(last=False)[1])
            slot = self._slot()
            self.waiting[request_id] = slot
            self.ts[slot], self.seq[slot] = ts[row], seq[row]
            self.probs[slot] = probs[row]
        rows = np.asarray(out_rows, dtype=np.int64)
        self.joins += len(rows)
        return Joined(ts[rows], seq[rows], np.asarray(out_labels, dtype=np.int64), probs[rows])

    def add_labels(self, ids: list[str], labels: npt.NDArray[np.int64], ts: Array) -> Joined:
        """Labels from a label log: join to waiting predictions, or wait for them."""
        slots: list[int] = []
        out_labels: list[int] = []
        for request_id, label, label_ts in zip(ids, labels.tolist(), ts.tolist()):
            slot = self.waiting.pop(request_id, None)
            if slot is not None:
                slots.append(slot)
                out_labels.append(label)
                self._remember_joined(request_id)
            elif request_id in self.joined or request_id in self.early:
                self.duplicates += 1
            else:
                while len(self.early) >= self.max_pending:
                    self.early.popitem(last=False)
                    self.expired += 1
                self.early[request_id] = (label, label_ts)
        index = np.asarray(slots, dtype=np.int64)
        joined = Joined(self.ts[index], self.seq[index], np.asarray(out_labels, dtype=np.int64),
                        self.probs[index])
        self.free.extend(slots)
        self.joins += len(slots)
        return joined

    def forget_early(self, ids: list[str]) -> None:
        """Drop these early labels, neither expired nor duplicates: a label without a
        model waited here and in other models' stores, and another model's prediction
        took it."""
        for request_id in ids:
            self.early.pop(request_id, None)

    def expire(self, now: float) -> None:
        """Drop what has waited longer than the ttl (event time `now`), oldest arrival
        first, stopping at the first entry still young enough: a cost proportional to
        what expires, not to what waits (an entry behind a younger one goes later)."""
        horizon = now - self.ttl_s
        while self.waiting:
            request_id, slot = next(iter(self.waiting.items()))
            if self.ts[slot] >= horizon:
                break
            self._evict(self.waiting.pop(request_id))
        while self.early:
            request_id, (_, label_ts) = next(iter(self.early.items()))
            if label_ts >= horizon:
                break
            del self.early[request_id]
            self.expired += 1

    def _evict(self, slot: int) -> None:
        self.free.append(slot)
        self.expired += 1

    def _slot(self) -> int:
        if self.free:
            return self.free.pop()
        n = len(self.ts)
        size = min(max(16, 2 * n), self.max_pending)
        self.ts = np.resize(self.ts, size)
        self.seq = np.resize(self.seq, size)
        self.probs = np.resize(self.probs, (size, self.k))
        self.free.extend(range(size - 1, n, -1))
        return n

    def _remember_joined(self, request_id: str) -> None:
        self.joined[request_id] = None
        while len(self.joined) > self.max_pending:
            self.joined.popitem(last=False)

    # -- checkpoint --------------------------------------------------------------------

    def state(self) -> tuple[dict, dict[str, npt.NDArray]]:
        slots = np.fromiter(self.waiting.values(), dtype=np.int64, count=len(self.waiting))
        early = list(self.early.items())
        meta = {"joins": self.joins, "expired": self.expired, "duplicates": self.duplicates}
        arrays = {
            "waiting_ids": _pack(list(self.waiting)),
            "waiting_ts": self.ts[slots],
            "waiting_seq": self.seq[slots],
            "waiting_probs": self.probs[slots],
            "early_ids": _pack([i for i, _ in early]),
            "early_labels": np.array([label for _, (label, _) in early], dtype=np.int64),
            "early_ts": np.array([t for _, (_, t) in early], dtype=np.float64),
            "joined_ids": _pack(list(self.joined)),
        }
        return meta, arrays

    def restore(self, meta: dict, arrays: dict[str, npt.NDArray]) -> None:
        self.joins, self.expired, self.duplicates = (
            meta["joins"], meta["expired"], meta["duplicates"])
        ids = _unpack(arrays["waiting_ids"])
        n = len(ids)
        self.ts = arrays["waiting_ts"].astype(np.float64)
        self.seq = arrays["waiting_seq"].astype(np.int64)
        self.probs = arrays["waiting_probs"].reshape(n, self.k).astype(np.float64)
        self.waiting = OrderedDict(zip(ids, range(n)))
        self.free = []
        self.early = OrderedDict(
            (i, (int(label), float(t))) for i, label, t in zip(
                _unpack(arrays["early_ids"]), arrays["early_labels"], arrays["early_ts"]))
        self.joined = OrderedDict.fromkeys(_unpack(arrays["joined_ids"]))


def _pack(ids: list[str]) -> npt.NDArray[np.uint8]:
    """Many strings as one byte array (a JSON list), not a fixed-width unicode array."""
    return np.frombuffer(json.dumps(ids).encode("utf-8"), dtype=np.uint8)


def _unpack(data: npt.NDArray[np.uint8]) -> list[str]:
    return json.loads(data.tobytes().decode("utf-8"))
