"""Typed decoding of whole blocks of lines with msgspec: the fast path of parse.py.

A source's `fields:` mapping becomes a tree of msgspec Structs holding just the fields we
read (everything else in a line is skipped without being built), decoded a block at a
time with `decode_lines`. Structs are `gc=False`: millions of short-lived objects would
otherwise trigger the cyclic collector again and again (measured: 1.8x on decoding).

This only decodes; parse.py decides what is valid, and anything this path cannot
vouch for goes through the plain `json` path there, so both give the same answer.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Annotated, Any, cast

import msgspec
import numpy as np
import numpy.typing as npt
import simdjson

from monitor.core.settings import FieldPath, Fields

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# An integer beyond 64 bits fails validation: the plain path reads it as a float.
_INT = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
# What each field may hold; anything else fails validation and takes the plain path.
_TYPES: dict[str, Any] = {
    "timestamp": float | str | None,
    "model": str | None,
    # Kept raw: parse.py turns a block's lists into one matrix with one simdjson parse
    # (`probability_rows`), never building a Python float per entry.
    "probabilities": msgspec.Raw,
    "prediction": _INT | str | None,
    "label": _INT | str | None,
    "id": str | _INT | None,
}


def _getter(path: FieldPath, names: dict[FieldPath, str]) -> Callable[[Any], Any]:
    attrs = [names[path[: i + 1]] for i in range(len(path))]
    if len(attrs) == 1:
        return operator.attrgetter(attrs[0])  # C speed: called once per line and field

    def nested(obj: Any) -> Any:
        for attr in attrs:
            obj = getattr(obj, attr)
            if obj is None:
                return None
        return obj

    return nested


class BlockDecoder:
    """Decodes blocks of JSON Lines into typed records for one source's field layout."""

    def __init__(self, fields: Fields, wanted: tuple[str, ...]) -> None:
        paths = {name: getattr(fields, name) for name in wanted}
        names: dict[FieldPath, str] = {}  # JSON key path -> attribute name
        for path in paths.values():
            for i in range(len(path)):
                names.setdefault(path[: i + 1], f"f{len(names)}")
        leaves = {path: _TYPES[name] for name, path in paths.items()}
        if len(leaves) != len(paths) or any(p[:-1] in leaves for p in leaves):
            raise ValueError("overlapping field paths")  # e.g. `out` and `out.scores`
        self.root = self._struct((), names, leaves)
        self.decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(self.root)
        self.get = {name: _getter(path, names) for name, path in paths.items()}
        # One parser, reused: a fresh one per block re-allocates (and page-faults) its
        # buffers every time, which cost more than the parse at K=100.
        self.parser = simdjson.Parser()

    def _struct(self, prefix: FieldPath, names: dict[FieldPath, str],
                leaves: dict[FieldPath, Any]) -> type:
        members = []
        rename = {}
        for path, attr in names.items():
            if len(path) != len(prefix) + 1 or path[: len(prefix)] != prefix:
                continue
            kind = leaves.get(path) or self._struct(path, names, leaves) | None
            members.append((attr, kind, msgspec.Raw() if kind is msgspec.Raw else None))
            rename[attr] = path[-1]
        return msgspec.defstruct("Line" + "_".join(prefix), members, rename=rename, gc=False)

    def decode_block(self, data: bytes, lines: int) -> list[Any] | None:
        """One record per line, or None when the block cannot be trusted line for line.

        `decode_lines` skips blank lines and accepts two values on one line, so a record
        could land on the wrong line. Lines that each start with `{` and end with `}`
        (every inner newline stands in `}\n{`) cannot hold less than one value (a value
        spanning lines would need a line ending inside a structure), so with as many
        values as lines they align.
        """
        if not (data and _one_object_per_line(data) and _utf8(data)):
            return None
        try:
            records = self.decoder.decode_lines(data)
        except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
            return None
        return records if len(records) == lines else None

    def probability_rows(self, raws: list[Any], k: int
                             ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
        """Raw JSON probability lists -> (which are plain lists of k numbers, an (n, k) matrix).

        All lists go into one JSON array of arrays that simdjson parses straight into
        doubles, no Python float per entry (2.5x faster than msgspec floats + np.array at
        K=100). simdjson flattens nested lists, so each list must have k entries and hold
        no list itself; anything else in the block (an object, a string, null) makes it go
        one list at a time, and rows that are not plain lists of k numbers are left to
        the plain path (`ok` False).
        """
        n = len(raws)
        matrix = np.full((n, k), np.nan)
        if None not in raws and all(raws):  # an absent field decodes to an empty Raw
            text = b"[" + b",".join(raws) + b"]"
            try:
                doc = cast(simdjson.Array, self.parser.parse(text))  # text is a list
                lengths = np.fromiter(map(len, doc), np.int64, n)  # type: ignore[arg-type]
                values = np.frombuffer(doc.as_buffer(of_type="d"))
            except (ValueError, TypeError):  # an object, a string, null inside
                values = np.zeros(0)
            except RuntimeError:  # an integer beyond 64 bits (BIGINT_ERROR), or a document
                # still referenced (never expected): start over with a fresh parser
                self.parser = simdjson.Parser()
                values = np.zeros(0)
            if (values.size == n * k and (lengths == k).all()
                    and np.count_nonzero(np.frombuffer(text, np.uint8) == _OPEN_LIST) == n + 1):
                matrix[:] = values.reshape(n, k)
                return np.ones(n, dtype=bool), matrix
        ok = np.zeros(n, dtype=bool)
        for i, raw in enumerate(raws):
            try:
                row = _LIST.decode(raw) if raw else ()
            except msgspec.DecodeError:
                continue
            if len(row) == k:
                matrix[i], ok[i] = row, True
        return ok, matrix

    def decode_line(self, line: bytes) -> Any | None:
        if not _utf8(line):
            return None
        try:
            return self.decoder.decode(line)
        except (msgspec.DecodeError, RecursionError):
            return None


_OPEN_LIST = ord("[")
_LIST = msgspec.json.Decoder(list[float])


def _one_object_per_line(data: bytes) -> bool:
    """Every line starts with `{` and ends with `}` (a numpy pass: 3x bytes.count)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(raw == _NEWLINE)
    return (raw[0] == _OPEN and bool((raw[ends - 1] == _CLOSE).all())
            and bool((raw[ends[:-1] + 1] == _OPEN).all()))


_NEWLINE, _OPEN, _CLOSE = ord("\n"), ord("{"), ord("}")


def _utf8(data: bytes) -> bool:
    """msgspec does not check the UTF-8 of the fields it skips; a line must be valid
    UTF-8 whole (ASCII, the common case, is checked at memory speed)."""
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
