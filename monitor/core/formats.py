"""Model servers' own log shapes -> the plain JSON Lines rows parse.py validates. Pure.

A source with `format: bentoml` or `sagemaker` (or the spool of an http source) has its
block transcoded line by line into canonical lines (`ts`, `model`, `probs` or
`prediction`, `label`, `id`, the default field names) before the ordinary parser takes
them, so windows, joins, checkpoints and exactly-once are the same for every format.
Each source line gives one canonical line or one `Reject`; `Transcoded.restore` puts
the parser's answer back in the source's line numbering.

Timestamps are turned into Unix seconds here, in the source's `timezone` (BentoML
writes naive local time); the parser then checks them as any numeric `ts`.
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from functools import partial
from typing import Any

import numpy as np

from monitor.core.parse import MISSING, Parsed, Reason, Reject, decode, lookup, parse_timestamp
from monitor.core.settings import Fields

CANONICAL = Fields()  # the field names of transcoded lines
REJECTED = "rejected"  # a spool line `{"rejected": reason}`: an event answered 400
# A spool segment's first line `{"segment": "<unique>"}`, skipped like a blank line: the
# tailer tells files apart by their first bytes, and two segments must never look alike
# (as they would if the same event were POSTed twice, each first in its segment).
SEGMENT = "segment"


@dataclass(frozen=True, slots=True)
class Columns:
    """From a BentoML schema file: the first column with role `prediction`, and with
    role `target`, used where `fields:` names none."""

    prediction: str | None = None
    target: str | None = None


NO_COLUMNS = Columns()


def schema_columns(text: str) -> Columns:
    """The columns of a BentoML schema log (`schema.<worker>.log`): one JSON object a
    line, `{"meta_data": ..., "columns": [{"name", "role", "type"}, ...]}`; the newest
    valid line wins (a restarted service logs its schema again)."""
    found = Columns()
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        columns = obj.get("columns") if isinstance(obj, dict) else None
        if not isinstance(columns, list):
            continue
        roles: dict[str, str] = {}
        for column in columns:
            if isinstance(column, dict) and isinstance(column.get("name"), str):
                roles.setdefault(str(column.get("role")), column["name"])
        found = Columns(roles.get("prediction"), roles.get("target"))
    return found


@dataclass(slots=True)
class Transcoded:
    """A block in canonical lines; `origin[j]` is the source line of canonical line j."""

    data: bytes
    lines: int
    origin: list[int] | None = field(default_factory=list)  # None: lines are the source's
    rejects: list[Reject] = field(default_factory=list)
    blank: int = 0
    fields: Fields = CANONICAL  # the field names the parser reads in `data`

    @classmethod
    def unchanged(cls, data: bytes, lines: int, fields: Fields) -> Transcoded:
        """A JSON Lines block as it is: the parser reads the source's own lines."""
        return cls(data, lines, None, fields=fields)

    def restore(self, parsed: Parsed) -> Parsed:
        """The parser's answer on the canonical lines, in source line numbers, with the
        lines this format already rejected (or found blank) added."""
        if self.origin is None:
            return parsed
        origin = np.asarray(self.origin, dtype=np.int64)
        for batch in parsed.predictions.values():
            batch.index = origin[batch.index]
        if parsed.labels is not None:
            parsed.labels.index = origin[parsed.labels.index]
        parsed.rejects = sorted(
            [Reject(self.origin[r.index], r.reason, r.detail) for r in parsed.rejects]
            + self.rejects,
            key=lambda r: r.index)
        parsed.blank += self.blank
        return parsed


def transcode(kind: str, data: bytes, fields: Fields, zone: tzinfo, labels: bool,
              columns: Columns = NO_COLUMNS) -> Transcoded:
    """The complete lines in `data` (each ends in a newline), read as format `kind`
    (`bentoml`, `sagemaker` or `kserve`), as canonical lines."""
    record = _RECORDS[(kind, labels)]
    out: list[bytes] = []
    origin: list[int] = []
    result = Transcoded(b"", 0, origin)
    for i, line in enumerate(data.split(b"\n")[:-1]):
        if not line.strip():
            result.blank += 1
            continue
        obj = decode(line)
        row = obj if isinstance(obj, Reason) else record(obj, fields, zone, columns)
        if row is None:
            result.blank += 1
            continue
        if isinstance(row, Reason):
            result.rejects.append(Reject(i, row))
            continue
        origin.append(i)
        out.append(line if row is obj else json.dumps(row, separators=(",", ":")).encode())
    out.append(b"")
    result.data = b"\n".join(out) if len(out) > 1 else b""
    result.lines = len(origin)
    return result


def _seconds(value: object, zone: tzinfo) -> float | Reason | None:
    if value is MISSING or value is None:
        return None
    try:
        return parse_timestamp(value, zone)
    except (ValueError, OverflowError):
        return Reason.BAD_TIMESTAMP


def _put(row: dict[str, Any], key: str, value: object) -> None:
    if value is not MISSING and value is not None:
        row[key] = value


def _output(row: dict[str, Any], obj: object, fields: Fields, prediction_column: str | None) -> None:
    """Probabilities (a list or {class: p}) or a hard prediction: by `fields`, else from
    the column the schema names (whichever of the two its value is)."""
    if fields.probabilities or fields.prediction:
        _put(row, "probs", lookup(obj, fields.probabilities) if fields.probabilities else MISSING)
        _put(row, "prediction", lookup(obj, fields.prediction) if fields.prediction else MISSING)
        return
    value = lookup(obj, (prediction_column,)) if prediction_column is not None else MISSING
    _put(row, "probs" if isinstance(value, list | dict) else "prediction", value)


def _bentoml(obj: dict[str, Any], fields: Fields, zone: tzinfo, columns: Columns,
             labels: bool) -> dict[str, Any] | Reason:
    """A BentoML monitoring data line: the columns as logged, `timestamp`, `request_id`."""
    ts = _seconds(lookup(obj, fields.timestamp), zone)
    if isinstance(ts, Reason):
        return ts
    row: dict[str, Any] = {}
    _put(row, "ts", ts)
    _put(row, "model", lookup(obj, fields.model))
    _put(row, "id", lookup(obj, fields.id))
    target = fields.label or ((columns.target,) if columns.target is not None else ())
    _put(row, "label", lookup(obj, target) if target else MISSING)
    if not labels:
        _output(row, obj, fields, columns.prediction)
    return row


def _cell(text: str) -> object:
    """A CSV cell: an integer, else a number, else the text (a class name)."""
    text = text.strip()
    if text.isascii() and text.lstrip("-").isdigit():
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def _payload(part: object) -> object:
    """SageMaker's `{"data", "encoding", "observedContentType"}` -> the decoded value:
    JSON as parsed, CSV as the list of cells of its single row; BASE64 holds either,
    told apart by the content type."""
    if not isinstance(part, dict) or not isinstance(part.get("data"), str):
        return Reason.MISSING_FIELD
    text, encoding = part["data"], str(part.get("encoding", "")).upper()
    if encoding == "BASE64":
        try:
            text = base64.b64decode(text, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return Reason.NOT_UTF8
        content_type = str(part.get("observedContentType", "")).lower()
        encoding = "CSV" if "csv" in content_type else "JSON"
    if encoding == "JSON":
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            return Reason.NOT_JSON
    if encoding == "CSV":
        rows = [r for r in csv.reader(text.splitlines()) if r]
        if len(rows) != 1:  # a record is one inference: one row
            return Reason.WRONG_LENGTH
        return [_cell(c) for c in rows[0]]
    return Reason.MISSING_FIELD


def _sagemaker_predictions(obj: dict[str, Any], fields: Fields, zone: tzinfo,
                           columns: Columns) -> dict[str, Any] | Reason:
    """A Data Capture record: the output decoded; time and id from `eventMetadata`."""
    output = _payload(lookup(obj, ("captureData", "endpointOutput")))
    if isinstance(output, Reason):
        return output
    meta = obj.get("eventMetadata")
    meta = meta if isinstance(meta, dict) else {}
    ts = _seconds(meta.get("inferenceTime", MISSING), zone)
    if isinstance(ts, Reason):
        return ts
    row: dict[str, Any] = {}
    _put(row, "ts", ts)
    _put(row, "id", meta.get("inferenceId") or meta.get("eventId"))
    if isinstance(output, list) and len(output) == 1 and isinstance(output[0], list):
        output = output[0]  # a batch of one
    if isinstance(output, list):  # CSV, or a JSON list: probabilities in class order
        _put(row, "probs" if len(output) > 1 else "prediction", output if len(output) > 1 else output[0])
    elif isinstance(output, dict):
        _put(row, "model", lookup(output, fields.model))
        _put(row, "probs", lookup(output, fields.probabilities))
        _put(row, "prediction", lookup(output, fields.prediction))
    else:
        _put(row, "prediction", output)
    return row


def _sagemaker_labels(obj: dict[str, Any], fields: Fields, zone: tzinfo,
                      columns: Columns) -> dict[str, Any] | Reason:
    """A Model Monitor ground-truth record, joined on `eventMetadata.eventId`."""
    truth = _payload(obj.get("groundTruthData"))
    if isinstance(truth, Reason):
        return truth
    meta = obj.get("eventMetadata")
    row: dict[str, Any] = {}
    _put(row, "id", meta.get("eventId") if isinstance(meta, dict) else MISSING)
    if isinstance(truth, list):
        _put(row, "label", truth[0] if len(truth) == 1 else MISSING)
        if len(truth) != 1:
            return Reason.WRONG_LENGTH
    elif isinstance(truth, dict):
        _put(row, "model", lookup(truth, fields.model))
        _put(row, "label", lookup(truth, fields.label))
    else:
        _put(row, "label", truth)
    return row


def _spool(obj: dict[str, Any], fields: Fields, zone: tzinfo,
           columns: Columns) -> dict[str, Any] | Reason | None:
    """An http source's spool line: a canonical row, the reason its event was refused, or
    (None) a segment's header."""
    reason = obj.get(REJECTED)
    if reason is None:
        return None if SEGMENT in obj and len(obj) == 1 else obj
    try:
        return Reason(reason)
    except ValueError:
        return Reason.NOT_OBJECT


Record = Callable[[dict[str, Any], Fields, tzinfo, Columns], "dict[str, Any] | Reason | None"]
_RECORDS: dict[tuple[str, bool], Record] = {
    ("bentoml", False): partial(_bentoml, labels=False),
    ("bentoml", True): partial(_bentoml, labels=True),
    ("sagemaker", False): _sagemaker_predictions,
    ("sagemaker", True): _sagemaker_labels,
    ("kserve", False): _spool,
}
