"""Line bytes -> validated events, a block at a time. Pure: no I/O, no clock, no logging.

A prediction block becomes, per model, arrays ready for aggregation (timestamps, an
(n, K) probability matrix, label indices with -1 for "not yet known", request ids);
every line that fails validation becomes a `Reject` carrying its index in the block and a
`Reason`, whose value is the `reason` label of `drift_monitor_rejected_lines_total`.
Validation that can be vectorised (finite, non-negative, sums) runs on the whole
matrix at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from enum import Enum
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from monitor.core.decode import INT64_MAX, INT64_MIN, BlockDecoder
from monitor.core.settings import DEFAULT_MAX_ID_BYTES, DEFAULT_MAX_SKEW_S, UTC, FieldPath, Fields


class Reason(str, Enum):
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_MODEL = "bad_model"
    BAD_ID = "bad_id"
    ID_TOO_LONG = "id_too_long"
    WRONG_LENGTH = "wrong_length"
    BAD_PROBABILITY = "bad_probability"
    BAD_SUM = "bad_sum"
    UNKNOWN_CLASS = "unknown_class"
    TOO_LONG = "too_long"
    UNKNOWN_MODEL = "unknown_model"
    TOO_MANY_MODELS = "too_many_models"


@dataclass(frozen=True, slots=True)
class Reject:
    index: int  # position of the line in its block
    reason: Reason
    detail: str = ""  # for the log line: the offending value (how far ahead, the sum, the model)


_MODEL_REASONS = frozenset({Reason.UNKNOWN_MODEL, Reason.TOO_MANY_MODELS})


def model_detail(model: str) -> str:
    """A model name for a log line: quoted and escaped (a hostile name cannot forge
    lines), and cut short."""
    return f"model {model[:80]!r}" + ("..." if len(model) > 80 else "")


@dataclass(slots=True)
class Predictions:
    """One model's share of a block, in arrival order."""

    model: str
    index: npt.NDArray[np.int64]  # line positions in the block
    ts: npt.NDArray[np.float64]
    probs: npt.NDArray[np.float64]  # (n, K), rows sum to 1
    labels: npt.NDArray[np.int64]  # class index, -1 when unknown
    ids: list[str | None]

    def take(self, keep: npt.NDArray[np.bool_]) -> Predictions:
        """The rows where `keep` is True."""
        return Predictions(self.model, self.index[keep], self.ts[keep], self.probs[keep],
                           self.labels[keep], [x for x, ok in zip(self.ids, keep) if ok])


@dataclass(slots=True)
class Labels:
    """A block of delayed labels, to be joined to predictions by (model, id). A label
    without a model (model None) joins by id alone: its class is resolved against the
    model of the prediction it finds, so `labels` is -1 there and `raw` holds it."""

    index: npt.NDArray[np.int64]
    model: list[str | None]
    ids: list[str]
    labels: npt.NDArray[np.int64]
    ts: npt.NDArray[np.float64]
    raw: list[int | str | None]

    def take(self, keep: list[bool]) -> Labels:
        """The rows where `keep` is True."""
        mask = np.asarray(keep, dtype=bool)
        return Labels(self.index[mask], [m for m, ok in zip(self.model, keep) if ok],
                      [x for x, ok in zip(self.ids, keep) if ok], self.labels[mask], self.ts[mask],
                      [r for r, ok in zip(self.raw, keep) if ok])


@dataclass(slots=True)
class Parsed:
    predictions: dict[str, Predictions] = field(default_factory=dict)
    labels: Labels | None = None
    rejects: list[Reject] = field(default_factory=list)
    blank: int = 0  # empty lines: skipped, neither ok nor rejected
    # Models with accepted lines that the `Known` view did not hold, in order of each
    # one's first accepted line: the aggregator admits them (or rejects their lines).
    new: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Known:
    """What the parser checks model names against, read-only: the classes of the models
    already admitted, and those a model not yet seen would get (`models.default`; None:
    an unknown model). `only`: a label source's own model, the one name it may use.
    The parser never admits: a line of a new model that passes every check is returned
    as such, so a rejected line never takes one of the `max_models` slots."""

    models: Mapping[str, tuple[str, ...]]
    default: tuple[str, ...] | None = None
    only: str | None = None

    def classes(self, name: str) -> tuple[str, ...] | Reason:
        if self.only is not None and name != self.only:
            return Reason.UNKNOWN_MODEL
        classes = self.models.get(name)
        if classes is not None:
            return classes
        return self.default if self.default is not None else Reason.UNKNOWN_MODEL

    def restricted(self, only: str | None) -> Known:
        """This view as a label source feeding only model `only` (None: any) sees it."""
        return self if only is None else replace(self, only=only)

MISSING = object()


def lookup(obj: object, path: FieldPath) -> object:
    """The value at `path` in a decoded JSON object, or MISSING (None is a value)."""
    for key in path:
        if not isinstance(obj, dict):
            return MISSING
        obj = obj.get(key, MISSING)
        if obj is MISSING:
            return MISSING
    return obj


MAX_NAME = 200  # characters in a model name
_FRACTION = re.compile(r"\.(\d+)")
MAX_TS = 253402300800.0  # 10000-01-01: later "times" are garbage, and overflow int64 buckets


class AheadOfClock(ValueError):
    """An event stamped further ahead of the clock than `max_clock_skew` allows."""


def parse_timestamp(value: object, zone: tzinfo = UTC) -> float:
    """RFC 3339 string or Unix seconds -> Unix seconds; ValueError when neither. A string
    without an offset is a wall time in `zone` (for an ambiguous time at the end of
    summer time, the first of the two)."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int | float):
        ts = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        # Python < 3.11 takes exactly 3 or 6 fraction digits; logs have 1 to 9.
        text = _FRACTION.sub(lambda m: "." + (m.group(1) + "00000")[:6], text, count=1)
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        ts = moment.timestamp()
    else:
        raise ValueError(value)
    if not in_range(ts):
        raise ValueError(value)
    return ts


# The time and class rules below take a float or an int, or a whole array of them (the
# fast path), so that each rule is written once.
Number = TypeVar("Number", float, int, npt.NDArray[np.float64])


def in_range(ts: Number) -> Any:
    """0 <= ts < MAX_TS: False for NaN and inf."""
    return (ts >= 0) & (ts < MAX_TS)


def too_far_ahead(ts: Number, arrival: float, max_skew_s: float) -> Any:
    """Stamped more than `max_skew_s` after its arrival."""
    return ts > arrival + max_skew_s


def event_time(value: object, arrival: float, max_skew_s: float, zone: tzinfo) -> float:
    """An event's time; one stamped more than `max_skew_s` after its arrival (the
    daemon's clock) is a bad timestamp: windows never move back, so it would make every
    current line late until the clock caught up."""
    ts = parse_timestamp(value, zone)
    if too_far_ahead(ts, arrival, max_skew_s):
        raise AheadOfClock(ahead(ts, arrival))
    return ts


def ahead(ts: float, clock: float) -> str:
    return f"{ts - clock:.0f}s ahead of the clock"


def class_index(value: object, classes: Sequence[str]) -> int:
    """A class given by index or by name -> its index; ValueError when unknown."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        if is_class(value, len(classes)):
            return value
        raise ValueError(value)
    if isinstance(value, float) and value.is_integer() and is_class(value, len(classes)):
        return int(value)
    if isinstance(value, str):
        if value in classes:
            return classes.index(value)
        # A string naming no class may still be an index ("1" from CSV ground truth).
        if value.isascii() and value.isdigit():
            return class_index(int(value), classes)
    raise ValueError(value)


def is_class(index: Number, k: int) -> Any:
    """An index of one of `k` classes."""
    return (index >= 0) & (index < k)


def _integer(digits: str) -> int | float:
    """A JSON integer literal; beyond 64 bits, a float (inf past 1e308), as the fast
    path's typed decoding reads it. No field takes such a number, and it must get the
    rejection its field gives any out-of-range number, not an exception: int -> float
    (numpy, float()) raises OverflowError past 1e308, and json's own int() refuses more
    than 4,300 digits."""
    if len(digits) <= 20:
        value = int(digits)
        if INT64_MIN <= value <= INT64_MAX:
            return value
    return float(digits)


def decode(line: bytes) -> dict[str, Any] | Reason:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return Reason.NOT_UTF8
    try:
        obj = json.loads(text, parse_int=_integer)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return Reason.NOT_JSON
    return obj if isinstance(obj, dict) else Reason.NOT_OBJECT


def _reject_or_skip(parsed: Parsed, index: int, reason: Reason, line: bytes) -> None:
    """Blank lines (a stray newline) carry no data: skipped, not rejected."""
    if reason is Reason.NOT_JSON and not line.strip():
        parsed.blank += 1
    else:
        parsed.rejects.append(Reject(index, reason))


def _request_id(obj: dict[str, Any], fields: Fields, max_id_bytes: int) -> str | Reason | None:
    value = lookup(obj, fields.id)
    return None if value is MISSING else request_id(value, max_id_bytes)


def request_id(value: object, max_id_bytes: int) -> str | Reason | None:
    """A request id as a string (an integer one too), None when absent, else why not."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return Reason.BAD_ID
    return Reason.ID_TOO_LONG if id_too_long(value, max_id_bytes) else value


def id_too_long(value: str, max_id_bytes: int) -> bool:
    """More than `max_id_bytes` in UTF-8 (a lone surrogate counts as its 3 bytes)."""
    return may_be_too_long(len(value), max_id_bytes) and len(
        value.encode("utf-8", "surrogatepass")) > max_id_bytes


def may_be_too_long(chars: int, max_id_bytes: int) -> bool:
    """A string of `chars` characters can exceed max_id_bytes (4 bytes a character at most)."""
    return chars > max_id_bytes // 4


def _model_name(obj: dict[str, Any], fields: Fields, default: str | None) -> str | Reason:
    value = lookup(obj, fields.model)
    if value is MISSING or value is None:
        return default if default is not None else Reason.MISSING_FIELD
    return value if isinstance(value, str) and valid_name(value) else Reason.BAD_MODEL


def valid_name(value: object) -> bool:
    """A model name fit for a Prometheus label: a short, encodable, non-empty string
    (a lone surrogate would break every later scrape)."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _vector(obj: dict[str, Any], fields: Fields, classes: Sequence[str]) -> list[float] | Reason:
    """The probability vector in class order (still unchecked for range and sum)."""
    probs = lookup(obj, fields.probabilities)
    if isinstance(probs, list):
        if len(probs) != len(classes):
            return Reason.WRONG_LENGTH
        return probs
    if isinstance(probs, dict):
        vector = [0.0] * len(classes)
        for name, p in probs.items():
            try:
                vector[classes.index(name)] = p
            except ValueError:
                return Reason.UNKNOWN_CLASS
        return vector
    if probs is not MISSING and probs is not None:
        return Reason.BAD_PROBABILITY
    hard = lookup(obj, fields.prediction)
    if hard is MISSING or hard is None:
        return Reason.MISSING_FIELD
    try:
        vector = [0.0] * len(classes)
        vector[class_index(hard, classes)] = 1.0
    except ValueError:
        return Reason.UNKNOWN_CLASS
    return vector


@dataclass(slots=True)
class _Rows:
    """Accepted lines of one model, gathered in pieces (fast path, then plain path)."""

    index: list[npt.NDArray[np.int64]] = field(default_factory=list)
    ts: list[npt.NDArray[np.float64]] = field(default_factory=list)
    probs: list[npt.NDArray[np.float64]] = field(default_factory=list)
    labels: list[npt.NDArray[np.int64]] = field(default_factory=list)
    ids: list[list[str | None]] = field(default_factory=list)

    def add(self, index: npt.ArrayLike, ts: npt.ArrayLike, probs: npt.NDArray[np.float64],
            labels: npt.ArrayLike, ids: list[str | None]) -> None:
        self.index.append(np.asarray(index, dtype=np.int64))
        self.ts.append(np.asarray(ts, dtype=np.float64))
        self.probs.append(probs)
        self.labels.append(np.asarray(labels, dtype=np.int64))
        self.ids.append(ids)


def split(data: bytes) -> list[bytes]:
    """The lines of a block of complete lines (each ends with a newline)."""
    lines = data.split(b"\n")
    lines.pop()
    return lines


def parse_predictions(
    data: bytes,
    n: int,
    fields: Fields,
    default_model: str | None,
    known: Known,
    now: float,
    sum_tolerance: float,
    decoder: BlockDecoder | None = None,
    *,
    max_skew_s: float = DEFAULT_MAX_SKEW_S,
    zone: tzinfo = UTC,
    max_id_bytes: int = DEFAULT_MAX_ID_BYTES,
) -> Parsed:
    """Validate a block of `n` complete prediction lines; `now` (the daemon's clock)
    stamps lines without a time, and a time more than `max_skew_s` after it is a bad
    timestamp. `zone` is the time zone of RFC 3339 times without an offset.

    With a `decoder`, lines of the common shape (a probability list of the right
    length, numeric or absent time, integer or absent label, string or absent id) go
    through typed block decoding and numpy; every other line takes the plain path,
    which knows every rejection reason. Both paths give the same answer for a line.
    Lines of a model `known` does not hold yet are kept under it and the model is
    listed in `new`.
    """
    rules = _Rules(now, max_skew_s, zone, max_id_bytes)
    parsed = Parsed()
    rows: dict[str, _Rows] = {}
    classes_of: dict[str, tuple[str, ...]] = {}
    lines: list[bytes] | None = None
    plain: Sequence[int] = range(n)
    if decoder is not None:
        records = decoder.decode_block(data, n)
        if records is None:
            lines = split(data)
            records = [decoder.decode_line(line) for line in lines]
        plain = _fast(records, decoder, default_model, known, rules, rows, classes_of, parsed)
    if len(plain):
        lines = lines if lines is not None else split(data)
        _plain(lines, plain, fields, default_model, known, rules, rows, classes_of, parsed)
    accepted = [_validated(model, r, len(classes_of[model]), sum_tolerance, parsed)
                for model, r in rows.items()]
    # In order of each model's first accepted line: the order the aggregator admits in.
    for batch in sorted((b for b in accepted if len(b.index)), key=lambda b: b.index[0]):
        parsed.predictions[batch.model] = batch
        if batch.model not in known.models:
            parsed.new.append(batch.model)
    parsed.rejects.sort(key=lambda reject: reject.index)
    return parsed


_NONE = type(None)


@dataclass(frozen=True, slots=True)
class _Rules:
    """What a line's time and id are checked against."""

    now: float
    max_skew_s: float
    zone: tzinfo
    max_id_bytes: int

    def time(self, raw: object) -> float:
        return self.now if raw is MISSING or raw is None else event_time(
            raw, self.now, self.max_skew_s, self.zone)


def _classes(model: str, known: Known, classes_of: dict[str, tuple[str, ...]]
             ) -> tuple[str, ...] | Reason:
    """A model's classes, looked up once per block (both paths share `classes_of`)."""
    classes = classes_of.get(model)
    if classes is None:
        resolved = known.classes(model)
        if isinstance(resolved, Reason):
            return resolved
        classes = classes_of[model] = resolved
    return classes


def _fast(records: list[Any], decoder: BlockDecoder, default_model: str | None, known: Known,
          rules: _Rules, rows: dict[str, _Rows], classes_of: dict[str, tuple[str, ...]],
          parsed: Parsed) -> list[int]:
    """Take the regular records of a block into `rows`; return the other lines' indices."""
    get = decoder.get
    n = len(records)
    present = [i for i, r in enumerate(records) if r is not None] if None in records else None
    if present is not None:
        records = [records[i] for i in present]
    models = list(map(get["model"], records)) if "model" in get else [None] * len(records)
    groups: dict[str | None, list[int]] = {}
    if len(set(models)) == 1:
        groups[models[0]] = list(range(len(records)))
    else:
        for i, name in enumerate(models):
            groups.setdefault(name, []).append(i)
    plain: list[int] = []
    for name, members in groups.items():
        model = default_model if name is None else name
        index = np.asarray(members if present is None else [present[i] for i in members], np.int64)
        if not model or not valid_name(model):  # the plain path says why
            plain.extend(index.tolist())
            continue
        classes = _classes(model, known, classes_of)
        if isinstance(classes, Reason):
            named = model_detail(model)
            parsed.rejects.extend(Reject(int(i), classes, named) for i in index)
            continue
        chosen = records if len(members) == len(records) else [records[i] for i in members]
        regular, ts, labels, ids, probs = _regular(chosen, decoder, classes, rules)
        plain.extend(index[~regular].tolist())
        if regular.any():
            rows.setdefault(model, _Rows()).add(index[regular], ts, probs, labels, ids)
    if present is not None:
        missing = set(range(n)).difference(present)
        plain.extend(missing)
    return sorted(plain)


def _regular(records: list[Any], decoder: BlockDecoder, classes: tuple[str, ...],
             rules: _Rules) -> tuple[npt.NDArray[np.bool_], Any, Any, list[Any], Any]:
    """Which records have the common shape, and their columns (for those only)."""
    k = len(classes)
    n = len(records)
    get = decoder.get
    ok, matrix = decoder.probability_rows(list(map(get["probabilities"], records)), k)
    stamps = list(map(get["timestamp"], records))
    if not set(map(type, stamps)) <= {float, _NONE}:
        for i, t in enumerate(stamps):
            if type(t) is str:  # RFC 3339
                try:
                    stamps[i] = parse_timestamp(t, rules.zone)
                except (ValueError, OverflowError):
                    ok[i], stamps[i] = False, None
    ts = np.array(stamps, dtype=np.float64)  # None -> NaN (JSON has no NaN)
    ts[np.isnan(ts)] = rules.now
    ok &= in_range(ts) & ~too_far_ahead(ts, rules.now, rules.max_skew_s)  # else bad_timestamp
    raw = list(map(get["label"], records))
    if not set(map(type, raw)) <= {int, _NONE}:
        for i, x in enumerate(raw):
            if type(x) is str:  # a class name, or an index in digits
                try:
                    raw[i] = class_index(x, classes)
                except ValueError:
                    ok[i], raw[i] = False, None
    labels = np.array(raw, dtype=np.float64)
    unknown = np.isnan(labels)
    ok &= unknown | is_class(labels, k)
    labels = np.where(unknown | ~ok, -1, labels).astype(np.int64)
    ids: list[Any] = [None] * n
    if "id" in get:
        ids = list(map(get["id"], records))
        kinds = set(map(type, ids))
        strings = ids if kinds == {str} else [x for x in ids if type(x) is str]
        # Integer and long ids are rare: one pass at C speed finds whether a block has any.
        if not kinds <= {str, _NONE} or (
                strings and may_be_too_long(max(map(len, strings)), rules.max_id_bytes)):
            ids = [request_id(x, rules.max_id_bytes) for x in ids]
            ok &= np.fromiter((type(x) is not Reason for x in ids), bool, n)
    if ok.all():
        return ok, ts, labels, ids, matrix
    keep = np.flatnonzero(ok)
    return ok, ts[keep], labels[keep], [ids[i] for i in keep], matrix[keep]


def _plain(lines: list[bytes], which: Sequence[int], fields: Fields, default_model: str | None,
           known: Known, rules: _Rules, rows: dict[str, _Rows],
           classes_of: dict[str, tuple[str, ...]], parsed: Parsed) -> None:
    """The plain path: `json.loads` and a check of every field, one line at a time."""
    gathered: dict[str, tuple[list[Any], list[Any], list[Any], list[Any], list[Any]]] = {}
    for i in which:
        line = lines[i]
        obj = decode(line)
        if isinstance(obj, Reason):
            _reject_or_skip(parsed, i, obj, line)
            continue
        model = _model_name(obj, fields, default_model)
        if isinstance(model, Reason):
            parsed.rejects.append(Reject(i, model))
            continue
        classes = _classes(model, known, classes_of)
        if isinstance(classes, Reason):
            parsed.rejects.append(Reject(i, classes, model_detail(model)))
            continue
        vector = _vector(obj, fields, classes)
        if isinstance(vector, Reason):
            parsed.rejects.append(Reject(i, vector))
            continue
        try:
            ts = rules.time(lookup(obj, fields.timestamp))
        except AheadOfClock as exc:
            parsed.rejects.append(Reject(i, Reason.BAD_TIMESTAMP, str(exc)))
            continue
        except (ValueError, OverflowError):
            parsed.rejects.append(Reject(i, Reason.BAD_TIMESTAMP))
            continue
        raw_label = lookup(obj, fields.label)
        label = -1
        if raw_label is not MISSING and raw_label is not None:
            try:
                label = class_index(raw_label, classes)
            except ValueError:
                parsed.rejects.append(Reject(i, Reason.UNKNOWN_CLASS))
                continue
        request_id = _request_id(obj, fields, rules.max_id_bytes)
        if isinstance(request_id, Reason):
            parsed.rejects.append(Reject(i, request_id))
            continue
        g = gathered.setdefault(model, ([], [], [], [], []))
        for column, item in zip(g, (i, ts, vector, label, request_id)):
            column.append(item)
    for model, (index, times, vectors, labels, ids) in gathered.items():
        k = len(classes_of[model])
        # A non-numeric entry makes its row NaN, which the range check then rejects.
        matrix = np.array([v if _numeric(v) else [np.nan] * k for v in vectors],
                          dtype=np.float64).reshape(len(vectors), k)
        rows.setdefault(model, _Rows()).add(index, times, matrix, labels, ids)


def _validated(model: str, r: _Rows, k: int, sum_tolerance: float, parsed: Parsed) -> Predictions:
    """Range and sum checks on the whole matrix; failing rows become rejects. Pieces
    from both paths are put back in line order."""
    index = np.concatenate(r.index)
    ts = np.concatenate(r.ts)
    probs = np.concatenate(r.probs) if len(r.probs) > 1 else r.probs[0]
    labels = np.concatenate(r.labels)
    ids = [x for piece in r.ids for x in piece] if len(r.ids) > 1 else r.ids[0]
    if len(r.index) > 1:
        order = np.argsort(index, kind="stable")
        index, ts, probs, labels = index[order], ts[order], probs[order], labels[order]
        ids = [ids[i] for i in order]
    with np.errstate(invalid="ignore"):
        sums = probs.sum(axis=1)
        bad_value = ~(np.isfinite(probs).all(axis=1) & (probs >= 0).all(axis=1))
        bad_sum = ~bad_value & (np.abs(sums - 1.0) > sum_tolerance)
    bad = bad_value | bad_sum
    if not bad.any():
        return Predictions(model, index, ts, probs / sums[:, None], labels, ids)
    for row in np.flatnonzero(bad_value):
        parsed.rejects.append(Reject(int(index[row]), Reason.BAD_PROBABILITY))
    for row in np.flatnonzero(bad_sum):
        parsed.rejects.append(Reject(int(index[row]), Reason.BAD_SUM,
                                     f"sum {sums[row]:.9g}, sum_tolerance {sum_tolerance:g}"))
    keep = ~bad
    with np.errstate(invalid="ignore", divide="ignore"):  # the rows not kept
        normalised = probs / sums[:, None]
    return Predictions(model, index, ts, normalised, labels, ids).take(keep)


def _numeric(row: list[object]) -> bool:
    return all(isinstance(p, int | float) and not isinstance(p, bool) for p in row)


def parse_labels(
    data: bytes,
    fields: Fields,
    default_model: str | None,
    known: Known,
    now: float,
    *,
    max_skew_s: float = DEFAULT_MAX_SKEW_S,
    zone: tzinfo = UTC,
    max_id_bytes: int = DEFAULT_MAX_ID_BYTES,
) -> Parsed:
    """Validate a block of delayed-label lines `{"id": ..., "label": ..., "ts": ...}`.
    With no model in the line and no `default_model`, the label joins by id alone
    (model None): its class is checked once its prediction, of any model, is found.
    Models `known` does not hold yet are listed in `new`, as in `parse_predictions`."""
    rules = _Rules(now, max_skew_s, zone, max_id_bytes)
    lines = split(data)
    parsed = Parsed()
    new: dict[str, None] = {}  # in order of first accepted line
    index: list[int] = []
    models: list[str | None] = []
    ids: list[str] = []
    labels: list[int] = []
    stamps: list[float] = []
    raws: list[int | str | None] = []
    for i, line in enumerate(lines):
        obj = decode(line)
        if isinstance(obj, Reason):
            _reject_or_skip(parsed, i, obj, line)
            continue
        raw_model = lookup(obj, fields.model)
        model: str | Reason | None = None
        if default_model is not None or (raw_model is not MISSING and raw_model is not None):
            model = _model_name(obj, fields, default_model)
        request_id = _request_id(obj, fields, max_id_bytes)
        raw_label = lookup(obj, fields.label)
        reason = next((x for x in (model, request_id) if isinstance(x, Reason)), None)
        if reason is None and (request_id is None or raw_label is MISSING or raw_label is None):
            reason = Reason.MISSING_FIELD
        label, raw = -1, None
        if reason is None and isinstance(model, str):
            classes = known.classes(model)
            if isinstance(classes, Reason):
                reason = classes
            else:
                try:
                    label = class_index(raw_label, classes)
                except ValueError:
                    reason = Reason.UNKNOWN_CLASS
        elif reason is None:
            if isinstance(raw_label, bool) or not isinstance(raw_label, int | str) or (
                    isinstance(raw_label, int) and raw_label < 0):
                reason = Reason.UNKNOWN_CLASS
            else:
                raw = raw_label
        if reason is None:
            try:
                ts = rules.time(lookup(obj, fields.timestamp))
            except (ValueError, OverflowError):
                reason = Reason.BAD_TIMESTAMP
        if reason is not None:
            named = model_detail(model) if reason in _MODEL_REASONS and isinstance(model, str) else ""
            parsed.rejects.append(Reject(i, reason, named))
            continue
        if isinstance(model, str) and model not in known.models:
            new[model] = None
        index.append(i)
        models.append(model)
        ids.append(request_id)  # type: ignore[arg-type]
        labels.append(label)
        stamps.append(ts)
        raws.append(raw)
    parsed.labels = Labels(
        index=np.asarray(index, dtype=np.int64),
        model=models,
        ids=ids,
        labels=np.asarray(labels, dtype=np.int64),
        ts=np.asarray(stamps, dtype=np.float64),
        raw=raws,
    )
    parsed.new = list(new)
    return parsed
