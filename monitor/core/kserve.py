"""KServe payload-logger events -> spool lines. Pure: no I/O, no clock.

The logger (kserve pkg/logger/worker.go) POSTs CloudEvents 1.0 in binary mode: the
attributes are `ce-*` headers (`ce-id`, shared by a request and its response, `ce-type`
`org.kubeflow.serving.inference.request` or `.response`, `ce-time`, extensions such as
`ce-inferenceservicename`) and the body is the model server's own HTTP body: v1
`{"predictions": [...]}` or Open Inference Protocol v2 `{"outputs": [{"name", "shape",
"datatype", "data"}]}`.

A response event becomes one canonical prediction line per row (id `ce-id`, or
`ce-id#<row>` when the body has several rows); whether a row is a valid prediction is
the parser's business, as for any log line (a NaN is written as `NaN`, which the parser
reads and rejects as a bad probability). A body that cannot be read as predictions
at all becomes one `{"rejected": reason}` line, so it is counted exactly once too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from monitor.core.formats import REJECTED
from monitor.core.parse import Reason

REQUEST_SUFFIX = ".request"


@dataclass(frozen=True, slots=True)
class Event:
    """What to spool for one POST: `lines` (complete lines, maybe none) and, for a
    body that is not predictions, the reason (answered 400)."""

    lines: bytes
    reason: Reason | None = None


def spool_lines(headers: Mapping[str, str], body: bytes, output: str | None, model: str | None,
                arrival: float) -> Event:
    """The spool lines of one POSTed event. `headers` keyed in lower case; `output` the
    v2 output tensor to read (default the first); `model`: the http source's, else each
    row names the InferenceService (`ce-inferenceservicename`); `arrival` stamps rows
    whose event has no `ce-time`."""
    if headers.get("ce-type", "").endswith(REQUEST_SUFFIX):
        return Event(b"")  # inputs only: no prediction, nothing counted
    event_id = headers.get("ce-id")
    rows = _rows(body, output) if event_id else Reason.MISSING_FIELD
    if isinstance(rows, Reason):
        return Event(json.dumps({REJECTED: rows.value}).encode() + b"\n", rows)
    common: dict[str, object] = {"ts": headers.get("ce-time") or arrival}
    service = headers.get("ce-inferenceservicename")
    if model is None and service:
        common["model"] = service
    out = []
    for i, value in enumerate(rows):
        key = "probs" if isinstance(value, list | dict) else "prediction"
        row = {**common, "id": event_id if len(rows) == 1 else f"{event_id}#{i}", key: value}
        out.append(json.dumps(row, separators=(",", ":")).encode() + b"\n")
    return Event(b"".join(out))


def _rows(body: bytes, output: str | None) -> list[object] | Reason:
    """One value per row: a probability list (or {class: p}), or a hard prediction."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        return Reason.NOT_UTF8
    except (ValueError, RecursionError):
        return Reason.NOT_JSON
    if not isinstance(doc, dict):
        return Reason.NOT_OBJECT
    if "outputs" in doc:
        return _v2(doc["outputs"], output)
    predictions = doc.get("predictions")
    if not isinstance(predictions, list):
        return Reason.MISSING_FIELD
    return predictions


def _v2(outputs: object, name: str | None) -> list[object] | Reason:
    """The named (or first) output tensor: [n, K] floats are probabilities, [n] integers
    or strings hard predictions; `data` nested or flattened row-major."""
    if not isinstance(outputs, list) or not outputs:
        return Reason.MISSING_FIELD
    tensor = next((t for t in outputs if isinstance(t, dict) and t.get("name") == name), None) \
        if name is not None else outputs[0]
    if not isinstance(tensor, dict):
        return Reason.MISSING_FIELD
    shape, data = tensor.get("shape"), tensor.get("data")
    if (not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                                and d >= 0 for d in shape)
            or not isinstance(data, list)):
        return Reason.MISSING_FIELD
    flat = _flatten(data)
    if len(shape) not in (1, 2) or math.prod(shape) != len(flat):
        return Reason.WRONG_LENGTH
    if len(shape) == 1:
        return flat
    n, k = shape
    return [flat[i * k:(i + 1) * k] for i in range(n)]


def _flatten(data: list[Any]) -> list[object]:
    out: list[object] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out

