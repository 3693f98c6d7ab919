"""Joining delayed labels to their predictions by request id. Pure: no clock, no I/O.

Per model, predictions with an id and no label wait in a bounded store until their label
arrives; a label that arrives first waits too. Both are bounded by `max_pending` (the
oldest evicted first) and by `join_ttl` in event time; what leaves unjoined is counted
as expired. Recently joined ids are remembered (bounded the same way) so that a second
label for the same id is recognised as a duplicate: the first label counts.

Waiting predictions keep their time, sequence number and probability vector in numpy
arrays (slots reused through a free list), so memory is about max_pending x (K + 2)
floats plus the id index, whatever the traffic. Ids longer than `max_id_length`
characters are refused (counted as expired): the index is bounded in bytes, not only in
entries. The parser already refuses ids over `max_id_bytes` (UTF-8 bytes, never fewer
than characters), so with the same bound here this only guards direct callers.

For the journal (checkpoint.py), a store can record what it was given since the last
`take_ops()`: the store is deterministic, so replaying those inputs on the state they
were applied to gives exactly the same state, and each waiting id is written once.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from monitor.core import schema
from monitor.core.errors import CheckpointError
from monitor.core.settings import DEFAULT_MAX_ID_BYTES

Array = npt.NDArray[np.float64]
MAX_ID_LENGTH = DEFAULT_MAX_ID_BYTES  # characters; a request id longer than this is refused


@dataclass(slots=True)
class Joined:
    """Labels matched to predictions: the prediction's time, sequence number and probs."""

    ts: Array
    seq: npt.NDArray[np.int64]
    labels: npt.NDArray[np.int64]
    probs: Array


@dataclass(slots=True)
class PredictionsOp:
    """An `add_predictions` call."""

    ids: list[str]
    ts: Array
    seq: npt.NDArray[np.int64]
    probs: Array


@dataclass(slots=True)
class LabelsOp:
    """An `add_labels` call."""

    ids: list[str]
    labels: npt.NDArray[np.int64]
    ts: Array


@dataclass(slots=True)
class ExpireOp:
    """An `expire` call that dropped something."""

    now: float


Op = PredictionsOp | LabelsOp | ExpireOp


class JoinStore:
    def __init__(self, k: int, ttl_s: float, max_pending: int,
                 max_id_length: int = MAX_ID_LENGTH) -> None:
        self.max_id_length = max_id_length
        self.k = k
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        # id -> slot in the arrays below, oldest first (insertion order = arrival order).
        self.waiting: OrderedDict[str, int] = OrderedDict()
        self.ts = np.zeros(0)
        self.seq = np.zeros(0, dtype=np.int64)
        self.probs = np.zeros((0, k))
        self.free: list[int] = []
        # id -> slot in early_labels / early_ts: labels that came before their prediction.
        self.early: OrderedDict[str, int] = OrderedDict()
        self.early_labels = np.zeros(0, dtype=np.int64)
        self.early_ts = np.zeros(0)
        self.early_free: list[int] = []
        # Recently joined ids, oldest first (a set and a queue: no per-id dict node).
        self.joined: set[str] = set()
        self.joined_order: deque[str] = deque()
        self.joins = 0
        self.expired = 0
        self.duplicates = 0
        self.ops: list[Op] | None = None  # inputs since take_ops(), while recording

    @property
    def pending(self) -> int:
        return len(self.waiting)

    def add_predictions(self, ids: list[str], ts: Array, seq: npt.NDArray[np.int64],
                        probs: Array) -> Joined:
        """Unlabelled predictions with ids: join those whose label already came, keep
        the rest waiting. Returns the joins made."""
        if self.ops is not None and ids:
            _record(self.ops, PredictionsOp(list(ids), ts, seq, probs))
        out_rows: list[int] = []
        out_labels: list[int] = []
        for row, request_id in enumerate(ids):
            early = self.early.pop(request_id, None)
            if early is not None:
                out_rows.append(row)
                out_labels.append(int(self.early_labels[early]))
                self.early_free.append(early)
                self._remember_joined(request_id)
                continue
            if request_id in self.waiting or request_id in self.joined:
                continue  # the same id predicted twice: the first one waits for the label
            if len(request_id) > self.max_id_length:
                self.expired += 1
                continue
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
        if self.ops is not None and ids:
            _record(self.ops, LabelsOp(list(ids), labels, ts))
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
            elif len(request_id) > self.max_id_length:
                self.expired += 1
            else:
                while len(self.early) >= self.max_pending:
                    self.early_free.append(self.early.popitem(last=False)[1])
                    self.expired += 1
                slot = self._early_slot()
                self.early[request_id] = slot
                self.early_labels[slot], self.early_ts[slot] = label, label_ts
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
        before = self.expired
        self._expire(now)
        if self.ops is not None and self.expired != before:
            _record(self.ops, ExpireOp(now))

    def _expire(self, now: float) -> None:
        horizon = now - self.ttl_s
        while self.waiting:
            request_id, slot = next(iter(self.waiting.items()))
            if self.ts[slot] >= horizon:
                break
            self._evict(self.waiting.pop(request_id))
        while self.early:
            request_id, slot = next(iter(self.early.items()))
            if self.early_ts[slot] >= horizon:
                break
            self.early_free.append(self.early.pop(request_id))
            self.expired += 1

    def _evict(self, slot: int) -> None:
        self.free.append(slot)
        self.expired += 1

    def _slot(self) -> int:
        if not self.free:
            self.ts, self.seq, self.probs = _grown(self.free, self.max_pending,
                                                   self.ts, self.seq, self.probs)
        return self.free.pop()

    def _early_slot(self) -> int:
        if not self.early_free:
            self.early_labels, self.early_ts = _grown(self.early_free, self.max_pending,
                                                      self.early_labels, self.early_ts)
        return self.early_free.pop()

    def _remember_joined(self, request_id: str) -> None:
        self.joined.add(request_id)
        self.joined_order.append(request_id)
        while len(self.joined_order) > self.max_pending:
            self.joined.discard(self.joined_order.popleft())

    # -- checkpoint --------------------------------------------------------------------

    def state(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        slots = np.fromiter(self.waiting.values(), dtype=np.int64, count=len(self.waiting))
        early = np.fromiter(self.early.values(), dtype=np.int64, count=len(self.early))
        meta = {"joins": self.joins, "expired": self.expired, "duplicates": self.duplicates}
        arrays: dict[str, npt.NDArray[Any]] = {
            "waiting_ids": _pack(list(self.waiting)),
            "waiting_ts": self.ts[slots],
            "waiting_seq": self.seq[slots],
            "waiting_probs": self.probs[slots],
            "early_ids": _pack(list(self.early)),
            "early_labels": self.early_labels[early],
            "early_ts": self.early_ts[early],
            "joined_ids": _pack(list(self.joined_order)),
        }
        return meta, arrays

    def restore(self, meta: Mapping[str, Any], arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        """Load what `state()` wrote, checking every part (CheckpointError when wrong)."""
        meta = schema.mapping(meta, "join")
        self.joins, self.expired, self.duplicates = (
            schema.count(schema.field(meta, key, "join"), f"join.{key}")
            for key in ("joins", "expired", "duplicates"))
        ids = _unpack(arrays, "waiting_ids")
        n = len(ids)
        self.ts = schema.rows(arrays, "waiting_ts", np.float64, (), n).copy()
        self.seq = schema.rows(arrays, "waiting_seq", np.int64, (), n).copy()
        self.probs = schema.rows(arrays, "waiting_probs", np.float64, (self.k,), n).copy()
        self.waiting = OrderedDict(zip(ids, range(n)))
        if len(self.waiting) != n:
            raise CheckpointError("join.waiting_ids: an id twice")
        self.free = []
        early = _unpack(arrays, "early_ids")
        labels = schema.rows(arrays, "early_labels", np.int64, (), len(early))
        schema.within(labels, 0, self.k, "join.early_labels")
        self.early_ts = schema.rows(arrays, "early_ts", np.float64, (), len(early)).copy()
        self.early_labels = labels.copy()
        self.early = OrderedDict(zip(early, range(len(early))))
        self.early_free = []
        if len(self.early) != len(early):
            raise CheckpointError("join.early_ids: an id twice")
        self.joined_order = deque(_unpack(arrays, "joined_ids"))
        self.joined = set(self.joined_order)
        if len(self.joined) != len(self.joined_order):
            raise CheckpointError("join.joined_ids: an id twice")

    # -- journal -----------------------------------------------------------------------

    def record(self) -> None:
        """Start (or restart) recording inputs, dropping any not taken yet."""
        self.ops = []

    def stop_recording(self) -> None:
        self.ops = None

    def take_ops(self) -> list[Op]:
        """The inputs since the last call (recording goes on)."""
        if self.ops is None:
            return []
        ops, self.ops = self.ops, []
        return ops

    def replay(self, ops: list[Op]) -> None:
        """Apply recorded inputs again (their joins went into the model's own state,
        which is restored apart)."""
        recording, self.ops = self.ops, None
        for op in ops:
            if isinstance(op, PredictionsOp):
                if op.probs.ndim != 2 or op.probs.shape[1] != self.k:
                    raise CheckpointError("journal: predictions of another class count")
                self.add_predictions(op.ids, op.ts, op.seq, op.probs)
            elif isinstance(op, LabelsOp):
                schema.within(op.labels, 0, self.k, "journal labels")
                self.add_labels(op.ids, op.labels, op.ts)
            else:
                self.expire(op.now)
        self.ops = recording


def _grown(free: list[int], cap: int, *columns: npt.NDArray[Any]) -> list[npt.NDArray[Any]]:
    """`columns` (rows of one store) grown, twice as long up to `cap` rows (and at least
    one more), the new rows put on the `free` list."""
    n = len(columns[0])
    size = max(min(max(16, 2 * n), cap), n + 1)
    free.extend(range(size - 1, n - 1, -1))
    return [np.resize(column, (size, *column.shape[1:])) for column in columns]


def _record(ops: list[Op], op: Op) -> None:
    """Append `op`, merged into the last one when that is the same call: two calls of
    add_predictions (add_labels) act as one on the rows of both, in order, and two
    expiries as the later one (the clock never goes back)."""
    last = ops[-1] if ops else None
    if isinstance(op, PredictionsOp) and isinstance(last, PredictionsOp):
        ops[-1] = PredictionsOp(last.ids + op.ids, np.concatenate([last.ts, op.ts]),
                                np.concatenate([last.seq, op.seq]),
                                np.concatenate([last.probs, op.probs]))
    elif isinstance(op, LabelsOp) and isinstance(last, LabelsOp):
        ops[-1] = LabelsOp(last.ids + op.ids, np.concatenate([last.labels, op.labels]),
                           np.concatenate([last.ts, op.ts]))
    elif isinstance(op, ExpireOp) and isinstance(last, ExpireOp):
        ops[-1] = ExpireOp(max(last.now, op.now))
    else:
        ops.append(op)


def encode_ops(ops: list[Op]) -> tuple[list[str], dict[str, npt.NDArray[Any]]]:
    """Ops as their kinds (in order) and named arrays `<i>.<field>`."""
    kinds: list[str] = []
    arrays: dict[str, npt.NDArray[Any]] = {}
    for i, op in enumerate(ops):
        if isinstance(op, PredictionsOp):
            kinds.append("predictions")
            arrays.update({f"{i}.ids": _pack(op.ids), f"{i}.ts": op.ts.astype(np.float64),
                           f"{i}.seq": op.seq.astype(np.int64),
                           f"{i}.probs": op.probs.astype(np.float64)})
        elif isinstance(op, LabelsOp):
            kinds.append("labels")
            arrays.update({f"{i}.ids": _pack(op.ids), f"{i}.labels": op.labels.astype(np.int64),
                           f"{i}.ts": op.ts.astype(np.float64)})
        else:
            kinds.append("expire")
            arrays[f"{i}.now"] = np.array([op.now])
    return kinds, arrays


def decode_ops(kinds: object, arrays: Mapping[str, npt.NDArray[Any]]) -> list[Op]:
    """What `encode_ops` wrote, every part checked (CheckpointError when wrong; the
    class count and label range are checked by `replay`, which knows the store)."""
    ops: list[Op] = []
    for i, kind in enumerate(schema.items(kinds, "journal ops")):
        if kind == "predictions":
            ids = _unpack(arrays, f"{i}.ids")
            n = len(ids)
            probs = arrays.get(f"{i}.probs")
            width = probs.shape[1] if probs is not None and probs.ndim == 2 else 0
            ops.append(PredictionsOp(ids, schema.rows(arrays, f"{i}.ts", np.float64, (), n),
                                     schema.rows(arrays, f"{i}.seq", np.int64, (), n),
                                     schema.rows(arrays, f"{i}.probs", np.float64, (width,), n)))
        elif kind == "labels":
            ids = _unpack(arrays, f"{i}.ids")
            n = len(ids)
            ops.append(LabelsOp(ids, schema.rows(arrays, f"{i}.labels", np.int64, (), n),
                                schema.rows(arrays, f"{i}.ts", np.float64, (), n)))
        elif kind == "expire":
            ops.append(ExpireOp(float(schema.rows(arrays, f"{i}.now", np.float64, (), 1)[0])))
        else:
            raise CheckpointError(f"journal op {i}: unknown kind {kind!r}")
    return ops


def _pack(ids: list[str]) -> npt.NDArray[np.uint8]:
    """Many strings as one byte array (a JSON list), not a fixed-width unicode array."""
    return np.frombuffer(json.dumps(ids).encode("utf-8"), dtype=np.uint8)


def _unpack(arrays: Mapping[str, npt.NDArray[Any]], name: str) -> list[str]:
    data = arrays.get(name)
    if data is None or data.dtype != np.uint8 or data.ndim != 1:
        raise CheckpointError(f"array {name}: missing or not bytes")
    try:
        ids = json.loads(data.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"array {name}: not a JSON list of ids") from None
    if not isinstance(ids, list) or not set(map(type, ids)) <= {str}:
        raise CheckpointError(f"array {name}: not a JSON list of ids")
    return ids
