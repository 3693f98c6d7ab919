"""YAML -> frozen, validated configuration.

Validation collects every problem with its key path (`models.fraud.windows[1]: ...`), so
`check-config` can print them all at once. Relative paths are resolved against the
config file's folder, so a config and its logs can travel together.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml

from monitor.errors import ConfigError, ConfigErrors

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

MAX_COUNT = 10_000_000  # rows in a count window
FieldPath = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A sliding window: `duration_s` (time) or `count` (last N predictions)."""

    name: str
    duration_s: float | None = None
    count: int | None = None


@dataclass(frozen=True, slots=True)
class ReferenceSpec:
    kind: str  # cumulative | window | decay | static
    duration_s: float | None = None
    half_life_s: float | None = None
    prior: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True)
class ModelConfig:
    classes: tuple[str, ...]
    windows: tuple[WindowSpec, ...]
    reference: ReferenceSpec = ReferenceSpec("cumulative")
    min_samples: int = 100
    smoothing: float = 0.0
    epsilon: float = 1e-12


@dataclass(frozen=True, slots=True)
class Fields:
    """Where each value lives in a line; dotted paths are split into tuples."""

    timestamp: FieldPath = ("ts",)
    model: FieldPath = ("model",)
    probabilities: FieldPath = ("probs",)
    prediction: FieldPath = ("prediction",)
    label: FieldPath = ("label",)
    id: FieldPath = ("id",)


@dataclass(frozen=True, slots=True)
class SourceConfig:
    name: str
    path: str
    model: str | None = None
    fields: Fields = Fields()
    start_at: str = "beginning"


@dataclass(frozen=True, slots=True)
class LabelSourceConfig:
    name: str
    path: str
    model: str | None = None
    fields: Fields = Fields()
    start_at: str = "beginning"
    join_ttl_s: float = 86400.0
    max_pending: int = 1_000_000


@dataclass(frozen=True, slots=True)
class Config:
    listen_host: str = "127.0.0.1"
    listen_port: int = 9841
    state_dir: str | None = None
    checkpoint_interval_s: float = 1.0
    poll_interval_s: float = 1.0
    watch: str = "auto"  # auto (inotify + polling) | poll
    max_models: int = 100
    max_line_bytes: int = 1 << 20
    sum_tolerance: float = 1e-3
    sources: tuple[SourceConfig, ...] = ()
    labels: tuple[LabelSourceConfig, ...] = ()
    models: Mapping[str, ModelConfig] = field(default_factory=dict)
    default_model: ModelConfig | None = None
    web_config_file: str | None = None  # exporter-toolkit web config: TLS, basic auth


def parse_duration(value: object) -> float:
    """`30s`, `5m`, `1h`, `7d` (or a plain number of seconds) -> seconds, > 0."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30s, 5m, 1h, 7d, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"expected a duration like 30s, 5m, 1h, 7d, got {value!r}")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


T = TypeVar("T")


class _Reader:
    """Walks a YAML mapping, recording problems instead of raising at the first."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(ConfigError(path, message))

    def mapping(self, value: object, path: str, allowed: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, f"expected a mapping, got {type(value).__name__}")
            return {}
        for key in value:
            if key not in allowed:
                self.fail(_join(path, str(key)), f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return {k: v for k, v in value.items() if k in allowed}

    def get(
        self,
        raw: dict[str, Any],
        key: str,
        path: str,
        convert: Callable[[object], T],
        default: T,
    ) -> T:
        if key not in raw:
            return default
        try:
            return convert(raw[key])
        except (ValueError, TypeError) as exc:
            self.fail(_join(path, key), str(exc))
            return default


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _string(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _int(minimum: int) -> Callable[[object], int]:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    return convert


def _float(minimum: float, *, strict: bool = False) -> Callable[[object], float]:
    def convert(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        number = float(value)
        if not math.isfinite(number) or number < minimum or (strict and number == minimum):
            bound = "greater than" if strict else "at least"
            raise ValueError(f"must be a finite number {bound} {minimum}, got {value!r}")
        return number

    return convert


def _choice(*choices: str) -> Callable[[object], str]:
    def convert(value: object) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return convert


def _listen(value: object) -> tuple[str, int]:
    text = _string(value)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT (0.0.0.0:PORT for every interface), got {value!r}")
    return host.strip("[]"), int(port)


def _fields(reader: _Reader, raw: object, path: str) -> Fields:
    names = set(Fields.__dataclass_fields__)
    mapping = reader.mapping(raw, path, names)
    kwargs = {}
    for key, value in mapping.items():
        try:
            text = _string(value)
        except ValueError as exc:
            reader.fail(_join(path, key), str(exc))
            continue
        kwargs[key] = tuple(text.split("."))
    return Fields(**kwargs)


def _resolve(path: str, base_dir: str) -> str:
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def _source(reader: _Reader, raw: object, path: str, base_dir: str, labels: bool) -> Any:
    allowed = {"name", "path", "model", "fields", "start_at"}
    if labels:
        allowed |= {"join_ttl", "max_pending"}
    data = reader.mapping(raw, path, allowed)
    for key in ("name", "path"):
        if key not in data:
            reader.fail(_join(path, key), "required")
    common = dict(
        name=reader.get(data, "name", path, _string, "?"),
        path=_resolve(reader.get(data, "path", path, _string, "?"), base_dir),
        model=reader.get(data, "model", path, _string, None),
        fields=_fields(reader, data.get("fields"), _join(path, "fields")),
        start_at=reader.get(data, "start_at", path, _choice("beginning", "end"), "beginning"),
    )
    if not labels:
        return SourceConfig(**common)
    return LabelSourceConfig(
        **common,
        join_ttl_s=reader.get(data, "join_ttl", path, parse_duration, 86400.0),
        max_pending=reader.get(data, "max_pending", path, _int(1), 1_000_000),
    )


def _window(reader: _Reader, raw: object, path: str) -> WindowSpec | None:
    if isinstance(raw, dict):
        data = reader.mapping(raw, path, {"count"})
        if "count" not in data:
            reader.fail(path, "expected a duration like 5m or {count: N}")
            return None
        count = reader.get(data, "count", path, _int(1), None)
        if count is not None and count > MAX_COUNT:
            reader.fail(_join(path, "count"), f"at most {MAX_COUNT} (each holds a row of K floats)")
            return None
        return None if count is None else WindowSpec(f"count:{count}", count=count)
    try:
        spec = WindowSpec(str(raw).strip(), duration_s=parse_duration(raw))
    except ValueError as exc:
        reader.fail(path, str(exc))
        return None
    if spec.duration_s is not None and spec.duration_s < 1.0:
        reader.fail(path, f"a time window must be at least 1s, got {raw!r}")
        return None
    return spec


def _reference(reader: _Reader, raw: object, path: str, n_classes: int) -> ReferenceSpec:
    if raw is None or raw == "cumulative":
        return ReferenceSpec("cumulative")
    if not isinstance(raw, dict) or len(raw) != 1:
        reader.fail(path, "expected cumulative, {window: D}, {decay: H} or {static: [p, ...]}")
        return ReferenceSpec("cumulative")
    data = reader.mapping(raw, path, {"window", "decay", "static"})
    if "window" in data:
        return ReferenceSpec("window", duration_s=reader.get(data, "window", path, parse_duration, 1.0))
    if "decay" in data:
        return ReferenceSpec("decay", half_life_s=reader.get(data, "decay", path, parse_duration, 1.0))
    if "static" in data:
        prior = data["static"]
        spath = _join(path, "static")
        if not isinstance(prior, list) or not all(
            isinstance(p, int | float) and not isinstance(p, bool) for p in prior
        ):
            reader.fail(spath, "expected a list of probabilities")
        elif len(prior) != n_classes:
            reader.fail(spath, f"expected {n_classes} probabilities (one per class), got {len(prior)}")
        elif any(not math.isfinite(p) or p < 0 for p in prior):
            reader.fail(spath, "probabilities must be finite and non-negative")
        elif abs(sum(prior) - 1.0) > 1e-6:
            reader.fail(spath, f"probabilities must sum to 1, got {sum(prior):.9g}")
        else:
            return ReferenceSpec("static", prior=tuple(float(p) for p in prior))
    return ReferenceSpec("cumulative")


def _model(reader: _Reader, raw: object, path: str) -> ModelConfig | None:
    allowed = {"classes", "reference", "windows", "min_samples", "smoothing", "epsilon"}
    data = reader.mapping(raw, path, allowed)
    classes = data.get("classes")
    cpath = _join(path, "classes")
    if classes is None:
        reader.fail(cpath, "required")
        return None
    if not isinstance(classes, list) or len(classes) < 2:
        reader.fail(cpath, "expected a list of at least 2 class names")
        return None
    if not all(isinstance(c, str) and c for c in classes):
        reader.fail(cpath, "class names must be non-empty strings (quote numbers: \"0\")")
    names = tuple(str(c) for c in classes)
    if len(set(names)) != len(names):
        reader.fail(cpath, "class names must be unique")
    raw_windows = data.get("windows", ["5m", "1h"])
    windows: list[WindowSpec] = []
    if not isinstance(raw_windows, list) or not raw_windows:
        reader.fail(_join(path, "windows"), "expected a non-empty list of windows")
    else:
        for i, item in enumerate(raw_windows):
            spec = _window(reader, item, f"{path}.windows[{i}]")
            if spec is None:
                continue
            if any(w.name == spec.name for w in windows):
                reader.fail(f"{path}.windows[{i}]", f"duplicate window {spec.name}")
                continue
            windows.append(spec)
    return ModelConfig(
        classes=names,
        windows=tuple(windows),
        reference=_reference(reader, data.get("reference"), _join(path, "reference"), len(names)),
        min_samples=reader.get(data, "min_samples", path, _int(0), 100),
        smoothing=reader.get(data, "smoothing", path, _float(0.0), 0.0),
        epsilon=reader.get(data, "epsilon", path, _float(0.0, strict=True), 1e-12),
    )


_TOP = {
    "listen", "state_dir", "checkpoint_interval", "poll_interval", "watch", "sources", "labels",
    "models", "max_models", "max_line_bytes", "sum_tolerance", "web_config_file",
}


def build_config(raw: object, base_dir: str = ".") -> Config:
    """Validate a parsed YAML document; raise ConfigErrors listing every problem."""
    reader = _Reader()
    data = reader.mapping(raw, "", _TOP)
    if raw is None:
        reader.fail("sources", "required: the config is empty")
    host, port = reader.get(data, "listen", "", _listen, ("127.0.0.1", 9841))
    state_dir = reader.get(data, "state_dir", "", _string, None)
    web_config_file = reader.get(data, "web_config_file", "", _string, None)

    sources = []
    for key, is_labels in (("sources", False), ("labels", True)):
        items = data.get(key, [])
        if not isinstance(items, list):
            reader.fail(key, "expected a list")
            items = []
        for i, item in enumerate(items):
            sources.append(_source(reader, item, f"{key}[{i}]", base_dir, is_labels))
    predictions = tuple(s for s in sources if isinstance(s, SourceConfig))
    labels = tuple(s for s in sources if isinstance(s, LabelSourceConfig))
    if not predictions and raw is not None and "sources" not in {e.path for e in reader.errors}:
        reader.fail("sources", "required: at least one prediction log")
    seen: set[str] = set()
    for key, group in (("sources", predictions), ("labels", labels)):
        for i, source in enumerate(group):
            if source.name in seen:
                reader.fail(f"{key}[{i}].name", f"duplicate source name {source.name!r}")
            seen.add(source.name)

    models: dict[str, ModelConfig] = {}
    default = None
    raw_models = data.get("models")
    if raw_models is None or raw_models == {}:
        reader.fail("models", "required: a mapping of model name to its classes and windows")
    elif not isinstance(raw_models, dict):
        kind = type(raw_models).__name__
        reader.fail("models", f"expected a mapping of model name to its settings, got {kind}")
    else:
        for name, item in raw_models.items():
            model = _model(reader, item, f"models.{name}")
            if model is None:
                continue
            if name == "default":
                default = model
            else:
                models[str(name)] = model
    for key, group in (("sources", predictions), ("labels", labels)):
        for i, source in enumerate(group):
            if source.model is not None and source.model not in models and default is None:
                reader.fail(f"{key}[{i}].model", f"model {source.model!r} is not in models")

    config = Config(
        listen_host=host,
        listen_port=port,
        state_dir=None if state_dir is None else _resolve(state_dir, base_dir),
        checkpoint_interval_s=reader.get(data, "checkpoint_interval", "", parse_duration, 1.0),
        poll_interval_s=reader.get(data, "poll_interval", "", parse_duration, 1.0),
        watch=reader.get(data, "watch", "", _choice("auto", "poll"), "auto"),
        max_models=reader.get(data, "max_models", "", _int(1), 100),
        max_line_bytes=reader.get(data, "max_line_bytes", "", _int(16), 1 << 20),
        sum_tolerance=reader.get(data, "sum_tolerance", "", _float(0.0), 1e-3),
        sources=predictions,
        labels=labels,
        models=models,
        default_model=default,
        web_config_file=None if web_config_file is None else _resolve(web_config_file, base_dir),
    )
    if len(models) > config.max_models:
        reader.fail("models", f"{len(models)} models configured, more than max_models={config.max_models}")
    if reader.errors:
        raise ConfigErrors(reader.errors)
    return config


def load_config(path: str) -> Config:
    """Read and validate a YAML config file."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigErrors([ConfigError(path, f"cannot read: {exc.strerror}")]) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigErrors([ConfigError(where, f"not valid YAML: {problem}")]) from None
    return build_config(raw, os.path.dirname(os.path.abspath(path)))
