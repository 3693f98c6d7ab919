"""`drift-monitor init`: a starter config worked out from a sample of a prediction log.

What a user otherwise works out by hand: which fields hold the time, the model, the
probabilities (or a hard prediction), the label and the request id, which models the
log carries, and each model's classes (the keys of `probs` objects, the names used in
labels and predictions, or the length of `probs` lists). Pure: lines in, YAML text out.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import yaml

from monitor.core.settings import Fields

# Names looked for, most usual first; a field's values must also have the right type.
CANDIDATES = {
    "timestamp": ("ts", "timestamp", "time", "@timestamp", "event_time", "created_at", "datetime"),
    "model": ("model", "model_name", "model_id", "modelName"),
    "probabilities": ("probs", "probabilities", "probas", "proba", "scores", "probability",
                      "predict_proba", "confidences", "output"),
    "prediction": ("prediction", "predicted", "pred", "predicted_class", "predicted_label",
                   "class", "y_pred"),
    "label": ("label", "target", "ground_truth", "actual", "y_true", "truth", "y"),
    "id": ("id", "request_id", "requestId", "prediction_id", "inference_id", "uuid", "trace_id"),
}
DEFAULTS = {name: ".".join(getattr(Fields(), name)) for name in CANDIDATES}
MAX_DEPTH = 3  # dotted paths looked into: output.scores, response.body.probs
_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class _Model:
    """What the sample says of one model stream."""

    lines: int = 0
    keys: list[str] = field(default_factory=list)  # probs object keys, first seen first
    lengths: set[int] = field(default_factory=set)  # probs list lengths
    names: set[str] = field(default_factory=set)  # class names in labels and predictions
    indices: set[int] = field(default_factory=set)  # class indices in labels and predictions


@dataclass(frozen=True)
class Starter:
    text: str  # the YAML config, with comments
    notes: tuple[str, ...]  # what the user should check, also in the text


def _leaves(doc: dict, prefix: str = "", depth: int = 1) -> Iterator[tuple[str, object]]:
    """Every (dotted path, value); a mapping of numbers is a leaf too (a `probs` object)."""
    for key, value in doc.items():
        path = f"{prefix}{key}"
        yield path, value
        if isinstance(value, dict) and depth < MAX_DEPTH:
            yield from _leaves(value, f"{path}.", depth + 1)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _distribution(value: object) -> bool:
    """A probability vector: 2+ numbers in [0, 1] summing to about 1, as list or object."""
    numbers = list(value.values()) if isinstance(value, dict) else value
    return (isinstance(numbers, list) and len(numbers) >= 2 and all(_number(v) for v in numbers)
            and all(0 <= v <= 1 for v in numbers) and abs(sum(numbers) - 1) <= 1e-2)


def _class(value: object) -> bool:
    return (isinstance(value, str) and 0 < len(value) <= 200) or (
        isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def _time(value: object) -> bool:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return 1e8 < value < 1e11  # Unix seconds, 1973 to 5138
    return isinstance(value, str) and bool(re.match(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d", value))


CHECKS = {
    "timestamp": _time,
    "model": lambda v: isinstance(v, str) and 0 < len(v) <= 200,
    "probabilities": _distribution,
    "prediction": _class,
    "label": lambda v: v is None or _class(v),
    "id": lambda v: (isinstance(v, str) and v != "") or (isinstance(v, int) and not isinstance(v, bool)),
}


def _pick(docs: Sequence[dict], role: str, taken: set[str]) -> str | None:
    """The path whose name is a candidate for `role` (by a leaf name, for dotted paths)
    and whose values fit it in most lines where it appears; the most usual name wins."""
    best: tuple[int, int, str] | None = None
    for path in {p for doc in docs for p, _ in _leaves(doc)} - taken:
        leaf = path.rsplit(".", 1)[-1]
        if leaf not in CANDIDATES[role]:
            continue
        values = [v for doc in docs for p, v in _leaves(doc) if p == path]
        fitting = sum(1 for v in values if CHECKS[role](v))
        if fitting * 2 <= len(values):
            continue
        rank = (-fitting, CANDIDATES[role].index(leaf), path)
        if best is None or rank < best:
            best = rank
    return None if best is None else best[2]


def _value(doc: dict, path: str | None) -> object:
    if path is None:
        return None
    value: object = doc
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _classes(m: _Model) -> tuple[list[str], list[str]]:
    """The classes of one model, in the order of its `probs`, and notes for the user."""
    notes = []
    if m.keys:
        classes = m.keys + sorted(m.names - set(m.keys))
    elif m.lengths:
        k = max(m.lengths)
        if len(m.lengths) > 1:
            notes.append(f"probs lists of {sorted(m.lengths)} entries: the classes are for {k}")
        if m.names and len(m.names) == k:
            classes = sorted(m.names)
            notes.append("classes are sorted by name: reorder them as the probs lists are")
        else:
            classes = [str(i) for i in range(k)]
            if m.names:
                notes.append(f"labels name {sorted(m.names)} but probs lists have {k} entries: "
                             "name the classes in list order")
    elif m.names:
        classes = sorted(m.names)
    else:
        classes = [str(i) for i in range(max(m.indices, default=0) + 1)]
    while len(classes) < 2:
        notes.append("the sample shows one class only: add the others")
        classes.append(f"other_{len(classes)}")
    return classes, notes


def _source_name(glob: str) -> str:
    stem = glob.rsplit("/", 1)[-1].split("*", 1)[0].split(".", 1)[0].strip("-_.")
    return _NAME.sub("-", stem) or "predictions"


def infer(lines: Sequence[bytes], glob: str, files: int) -> Starter:
    """A starter config for the prediction log `glob` from a sample of its `lines`
    (read from `files` files). Raises ValueError when no line looks like a prediction."""
    docs = []
    for line in lines:
        try:
            doc = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(doc, dict):
            docs.append(doc)
    found: dict[str, str] = {}
    for role in ("probabilities", "prediction", "label", "timestamp", "model", "id"):
        path = _pick(docs, role, set(found.values()))
        if path is not None:
            found[role] = path
    output = found.get("probabilities", found.get("prediction"))
    if output is None:
        raise ValueError(
            f"{len(docs)} of {len(lines)} sampled lines are JSON objects, and none has "
            f"probabilities ({', '.join(CANDIDATES['probabilities'])}: a list or object of "
            f"probabilities) or a prediction ({', '.join(CANDIDATES['prediction'])}): "
            "is it a label log, or are the fields named otherwise?")
    name = _source_name(glob)
    models: dict[str, _Model] = {}
    for doc in docs:
        model_name = _value(doc, found.get("model"))
        m = models.setdefault(model_name if isinstance(model_name, str) else name, _Model())
        m.lines += 1
        probs = _value(doc, found.get("probabilities"))
        if isinstance(probs, dict) and _distribution(probs):
            m.keys += [str(k) for k in probs if str(k) not in m.keys]
        elif isinstance(probs, list) and _distribution(probs):
            m.lengths.add(len(probs))
        for role in ("label", "prediction"):
            value = _value(doc, found.get(role))
            if isinstance(value, str) and value and not value.isdigit():
                m.names.add(value)
            elif isinstance(value, str | int) and _class(value):
                m.indices.add(int(value))
    notes: list[str] = []
    model_configs = {}
    for model_name, m in models.items():
        classes, model_notes = _classes(m)
        notes += [f"models.{model_name}: {note}" for note in model_notes]
        model_configs[model_name] = {"classes": classes, "windows": ["5m", "1h"],
                                     "min_samples": 100}
    source: dict[str, object] = {"name": name, "path": glob}
    if "model" not in found:
        source["model"] = name
    fields = {role: path for role, path in found.items() if path != DEFAULTS[role]}
    if fields:
        source["fields"] = fields
    config: dict[str, object] = {"listen": "127.0.0.1:9841", "state_dir": "drift-monitor-state",
                                 "sources": [source], "models": model_configs}
    if len(model_configs) > 100:
        config["max_models"] = len(model_configs)
    missing = [role for role in ("label", "timestamp", "id") if role not in found]
    header = [
        f"# Starter config written by `drift-monitor init` from {len(lines)} lines of {files} "
        f"file(s) matching {glob}.",
        "# Fields found: " + ", ".join(f"{role}={path}" for role, path in found.items()) + ".",
        *([f"# Not found: {', '.join(missing)} (no labels: only output drift is measured; "
           "no timestamp: arrival time is used)."] if missing else []),
        *(f"# CHECK: {note}" for note in notes),
        "# state_dir is relative to this file's folder. Validate with: drift-monitor "
        "check-config FILE",
        "# Every key: config/example.yaml in the drift-monitor repository.",
    ]
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=100)
    return Starter("\n".join(header) + "\n" + body, tuple(notes))
