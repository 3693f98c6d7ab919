"""YAML -> frozen, validated configuration.

Validation collects every problem with its key path (`models.fraud.windows[1]: ...`), so
`check-config` can print them all at once. Relative paths are resolved against the
config file's folder, so a config and its logs can travel together.
"""

from __future__ import annotations

import math
import os
import re
import reprlib
from collections.abc import Callable
from dataclasses import replace
from datetime import tzinfo
from types import MappingProxyType
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from monitor.core.errors import ConfigError, ConfigErrors
from monitor.core.settings import (
    BENTOML_FIELDS,
    DEFAULT_MAX_ID_BYTES,
    DEFAULT_MAX_SKEW_S,
    FORMATS,
    MAX_SPOOL_BYTES,
    SPOOL_FOLDER,
    UTC,
    Config,
    FieldPath,
    Fields,
    HttpSourceConfig,
    LabelSourceConfig,
    ModelConfig,
    ReferenceSpec,
    SourceConfig,
    WindowSpec,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

MAX_COUNT = 10_000_000  # rows in a count window
# Upper bounds on what one setting can make the daemon allocate or spin on.
MAX_LINE_BYTES = 64 << 20
MAX_ID_BYTES = 64 << 10
MAX_PENDING = 10_000_000
MAX_MODELS = 10_000
MIN_INTERVAL_S = 0.01  # checkpoint_interval, poll_interval
MAX_DURATION_S = 10 * 366 * 86400.0
# Bounds on the config file itself: its size, and what its YAML may expand to.
MAX_CONFIG_BYTES = 1 << 20
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 200_000  # counted after alias expansion (a billion laughs is 10^9)
_show = reprlib.Repr()  # a value quoted in a message stays short, whatever its size
_show.maxstring = _show.maxother = 60
_show.maxlevel, _show.maxlist, _show.maxdict = 2, 4, 4


def show(value: object) -> str:
    """A config value as quoted in an error message: short whatever its size."""
    return _show.repr(value)


def _number(value: int | float) -> float:
    """float(value), with an integer too large for a float as a ValueError."""
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"number out of range, got {show(value)}") from None


def parse_duration(value: object) -> float:
    """`30s`, `5m`, `1h`, `7d` (or a plain number of seconds) -> seconds, > 0, at most
    ten years."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a duration like 30s, 5m, 1h, 7d, got {show(value)}")
    if isinstance(value, int | float):
        seconds = _number(value)
    else:
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"expected a duration like 30s, 5m, 1h, 7d, got {show(value)}")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be positive, got {show(value)}")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"duration must be at most 3660d, got {show(value)}")
    return seconds


def _interval(value: object) -> float:
    """A loop interval: a duration of at least MIN_INTERVAL_S (a 1e-9 s interval spins)."""
    seconds = parse_duration(value)
    if seconds < MIN_INTERVAL_S:
        raise ValueError(f"must be at least 10ms, got {show(value)}")
    return seconds


T = TypeVar("T")


class KeyReader:
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
                self.fail(key_path(path, str(key)), f"unknown key (allowed: {', '.join(sorted(allowed))})")
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
            self.fail(key_path(path, key), str(exc))
            return default


def key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def non_empty_string(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {show(value)}")
    return value


def _path(value: object) -> str:
    """A file path or glob: a string the OS can take (no NUL byte)."""
    text = non_empty_string(value)
    if "\0" in text:
        raise ValueError(f"a path cannot contain a NUL byte, got {show(value)}")
    return text


def _int(minimum: int, maximum: int | None = None) -> Callable[[object], int]:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {show(value)}")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {show(value)}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be at most {maximum}, got {show(value)}")
        return value

    return convert


def _float(minimum: float, *, strict: bool = False, maximum: float = math.inf
           ) -> Callable[[object], float]:
    def convert(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {show(value)}")
        number = _number(value)
        if not math.isfinite(number) or number < minimum or (strict and number == minimum):
            bound = "greater than" if strict else "at least"
            raise ValueError(f"must be a finite number {bound} {minimum}, got {show(value)}")
        if number > maximum:
            raise ValueError(f"must be at most {maximum:g}, got {show(value)}")
        return number

    return convert


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {show(value)}")
    return value


def choice(*choices: str) -> Callable[[object], str]:
    def convert(value: object) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {show(value)}")
        return value

    return convert


def _zone(value: object) -> tzinfo:
    """An IANA time zone name (`Europe/Berlin`, `UTC`)."""
    name = non_empty_string(value)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # ValueError: not a key ("../x")
        raise ValueError(f"unknown time zone {show(value)} (an IANA name such as "
                         "Europe/Berlin or UTC)") from None


def parse_listen(value: object) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:PORT` for IPv6) -> (host, port)."""
    text = non_empty_string(value)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT (0.0.0.0:PORT for every interface), got {show(value)}")
    return host.strip("[]"), int(port)


def _fields(reader: KeyReader, raw: object, path: str, defaults: Fields = Fields()) -> Fields:
    names = set(Fields.__dataclass_fields__)
    mapping = reader.mapping(raw, path, names)
    kwargs: dict[str, FieldPath] = {}
    for key, value in mapping.items():
        try:
            text = non_empty_string(value)
        except ValueError as exc:
            reader.fail(key_path(path, key), str(exc))
            continue
        kwargs[key] = tuple(text.split("."))
    return replace(defaults, **kwargs)


def resolve_path(path: str, base_dir: str) -> str:
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def _source(reader: KeyReader, raw: object, path: str, base_dir: str, labels: bool) -> Any:
    allowed = {"name", "path", "model", "fields", "start_at", "format", "timezone", "follow_symlinks"}
    if labels:
        allowed |= {"join_ttl", "max_pending"}
    data = reader.mapping(raw, path, allowed)
    for key in ("name", "path"):
        if key not in data:
            reader.fail(key_path(path, key), "required")
    kind = reader.get(data, "format", path, choice(*FORMATS), "jsonl")
    common: dict[str, Any] = dict(
        name=reader.get(data, "name", path, non_empty_string, "?"),
        path=resolve_path(reader.get(data, "path", path, _path, "?"), base_dir),
        model=reader.get(data, "model", path, non_empty_string, None),
        fields=_fields(reader, data.get("fields"), key_path(path, "fields"),
                       BENTOML_FIELDS if kind == "bentoml" else Fields()),
        start_at=reader.get(data, "start_at", path, choice("beginning", "end"), "beginning"),
        format=kind,
        timezone=reader.get(data, "timezone", path, _zone, UTC),
        follow_symlinks=reader.get(data, "follow_symlinks", path, _bool, False),
    )
    if not labels:
        return SourceConfig(**common)
    return LabelSourceConfig(
        **common,
        join_ttl_s=reader.get(data, "join_ttl", path, parse_duration, 86400.0),
        max_pending=reader.get(data, "max_pending", path, _int(1, MAX_PENDING), 1_000_000),
    )


def _http_source(reader: KeyReader, raw: object, path: str) -> HttpSourceConfig:
    data = reader.mapping(raw, path, {"name", "path", "format", "model", "output",
                                      "max_spool_bytes"})
    for key in ("name", "path", "format"):
        if key not in data:
            reader.fail(key_path(path, key), "required")
    url = reader.get(data, "path", path, non_empty_string, "/")
    if not url.startswith("/") or "?" in url or url in ("/metrics", "/healthz", "/readyz"):
        reader.fail(key_path(path, "path"), f"expected a URL path like /kserve/fraud, got {url!r}")
    return HttpSourceConfig(
        name=reader.get(data, "name", path, non_empty_string, "?"),
        path=url,
        format=reader.get(data, "format", path, choice("kserve"), "kserve"),
        model=reader.get(data, "model", path, non_empty_string, None),
        output=reader.get(data, "output", path, non_empty_string, None),
        max_spool_bytes=reader.get(data, "max_spool_bytes", path, _int(4096), MAX_SPOOL_BYTES),
    )


def spool_folder(state_dir: str, name: str) -> str:
    return os.path.join(state_dir, SPOOL_FOLDER, name)


def spool_source(http: HttpSourceConfig, state_dir: str) -> SourceConfig:
    """The prediction source that reads an http source's spool, exactly once, as a log."""
    return SourceConfig(name=http.name, path=os.path.join(spool_folder(state_dir, http.name), "*.jsonl"),
                        model=http.model, format=http.format)


def _window(reader: KeyReader, raw: object, path: str) -> WindowSpec | None:
    if isinstance(raw, dict):
        data = reader.mapping(raw, path, {"count"})
        if "count" not in data:
            reader.fail(path, "expected a duration like 5m or {count: N}")
            return None
        count = reader.get(data, "count", path, _int(1), None)
        if count is not None and count > MAX_COUNT:
            reader.fail(key_path(path, "count"), f"at most {MAX_COUNT} (each holds a row of K floats)")
            return None
        return None if count is None else WindowSpec(f"count:{count}", count=count)
    try:
        duration_s = parse_duration(raw)
    except ValueError as exc:
        reader.fail(path, str(exc))
        return None
    if duration_s < 1.0:
        reader.fail(path, f"a time window must be at least 1s, got {show(raw)}")
        return None
    return WindowSpec(str(raw).strip(), duration_s=duration_s)


def _reference(reader: KeyReader, raw: object, path: str, n_classes: int) -> ReferenceSpec:
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
        spath = key_path(path, "static")
        if not isinstance(prior, list) or not all(
            isinstance(p, int | float) and not isinstance(p, bool) for p in prior
        ):
            reader.fail(spath, "expected a list of probabilities")
        elif len(prior) != n_classes:
            reader.fail(spath, f"expected {n_classes} probabilities (one per class), got {len(prior)}")
        else:
            # A huge integer is a float out of range, not an OverflowError.
            values = [float(p) if abs(p) < 2.0**64 else math.inf for p in prior]
            if any(not math.isfinite(p) or p < 0 for p in values):
                reader.fail(spath, "probabilities must be finite and non-negative")
            elif abs(sum(values) - 1.0) > 1e-6:
                reader.fail(spath, f"probabilities must sum to 1, got {sum(values):.9g}")
            else:
                return ReferenceSpec("static", prior=tuple(values))
    return ReferenceSpec("cumulative")


def _model(reader: KeyReader, raw: object, path: str) -> ModelConfig | None:
    allowed = {"classes", "reference", "windows", "min_samples", "smoothing", "epsilon"}
    data = reader.mapping(raw, path, allowed)
    classes = data.get("classes")
    cpath = key_path(path, "classes")
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
        reader.fail(key_path(path, "windows"), "expected a non-empty list of windows")
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
        reference=_reference(reader, data.get("reference"), key_path(path, "reference"), len(names)),
        min_samples=reader.get(data, "min_samples", path, _int(0), 100),
        smoothing=reader.get(data, "smoothing", path, _float(0.0), 0.0),
        epsilon=reader.get(data, "epsilon", path, _float(0.0, strict=True), 1e-12),
    )


_TOP = {
    "listen", "state_dir", "checkpoint_interval", "poll_interval", "watch", "sources", "labels",
    "models", "max_models", "max_line_bytes", "max_id_bytes", "max_clock_skew", "sum_tolerance",
    "max_open_files", "http_sources", "web_config_file",
}


def build_config(raw: object, base_dir: str = ".") -> Config:
    """Validate a parsed YAML document; raise ConfigErrors listing every problem."""
    reader = KeyReader()
    data = reader.mapping(raw, "", _TOP)
    if raw is None:
        reader.fail("sources", "required: the config is empty")
    host, port = reader.get(data, "listen", "", parse_listen, ("127.0.0.1", 9841))
    state_dir = reader.get(data, "state_dir", "", _path, None)
    web_config_file = reader.get(data, "web_config_file", "", _path, None)

    sources = []
    for key, is_labels in (("sources", False), ("labels", True)):
        items = data.get(key, [])
        if not isinstance(items, list):
            reader.fail(key, "expected a list")
            items = []
        for i, item in enumerate(items):
            sources.append(_source(reader, item, f"{key}[{i}]", base_dir, is_labels))
    http_items = data.get("http_sources", [])
    if not isinstance(http_items, list):
        reader.fail("http_sources", "expected a list")
        http_items = []
    http = tuple(_http_source(reader, item, f"http_sources[{i}]") for i, item in enumerate(http_items))
    if http and state_dir is None:
        reader.fail("http_sources", "needs state_dir: accepted events are spooled there")
    for i, item in enumerate(http):
        if any(other.path == item.path for other in http[:i]):
            reader.fail(f"http_sources[{i}].path", f"duplicate path {item.path!r}")
    predictions = tuple(s for s in sources if isinstance(s, SourceConfig))
    labels = tuple(s for s in sources if isinstance(s, LabelSourceConfig))
    if (not predictions and not http and raw is not None
            and "sources" not in {e.path for e in reader.errors}):
        reader.fail("sources", "required: at least one prediction log (or http_sources)")
    seen: set[str] = set()
    groups: tuple[tuple[str, tuple[SourceConfig | LabelSourceConfig | HttpSourceConfig, ...]], ...] = (
        ("sources", predictions), ("labels", labels), ("http_sources", http))
    for key, group in groups:
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
    for key, group in groups:
        for i, source in enumerate(group):
            if source.model is not None and source.model not in models and default is None:
                reader.fail(f"{key}[{i}].model", f"model {source.model!r} is not in models")

    config = Config(
        listen_host=host,
        listen_port=port,
        state_dir=None if state_dir is None else resolve_path(state_dir, base_dir),
        checkpoint_interval_s=reader.get(data, "checkpoint_interval", "", _interval, 1.0),
        poll_interval_s=reader.get(data, "poll_interval", "", _interval, 1.0),
        watch=reader.get(data, "watch", "", choice("auto", "poll"), "auto"),
        max_models=reader.get(data, "max_models", "", _int(1, MAX_MODELS), 100),
        max_line_bytes=reader.get(data, "max_line_bytes", "", _int(16, MAX_LINE_BYTES), 1 << 20),
        max_open_files=reader.get(data, "max_open_files", "", _int(1), 512),
        max_id_bytes=reader.get(data, "max_id_bytes", "", _int(1, MAX_ID_BYTES), DEFAULT_MAX_ID_BYTES),
        max_clock_skew_s=reader.get(data, "max_clock_skew", "", parse_duration, DEFAULT_MAX_SKEW_S),
        sum_tolerance=reader.get(data, "sum_tolerance", "", _float(0.0, maximum=1.0), 1e-3),
        sources=predictions + tuple(spool_source(h, resolve_path(state_dir, base_dir)) for h in http
                                    if state_dir is not None),
        labels=labels,
        http_sources=http,
        models=MappingProxyType(models),
        default_model=default,
        web_config_file=None if web_config_file is None else resolve_path(web_config_file, base_dir),
    )
    if len(models) > config.max_models:
        reader.fail("models", f"{len(models)} models configured, more than max_models={config.max_models}")
    if reader.errors:
        raise ConfigErrors(reader.errors)
    return config


class _BoundedLoader(yaml.SafeLoader):
    """yaml.safe_load with bounds, so that no config file can exhaust the stack or the
    memory: nesting at most MAX_YAML_DEPTH deep (the composer recurses per level), and at
    most MAX_YAML_NODES nodes once aliases are expanded (400 bytes of nested aliases
    expand to 10^9, and everything that walks the document walks the expansion). Errors
    name the key path where the bound was crossed."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.keys: list[str] = []  # key path of the node being composed

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # `index` is the key node of a mapping value, the position of a list item, or
        # None while composing a key.
        if isinstance(index, yaml.ScalarNode):
            self.keys.append(key_path(self.keys[-1] if self.keys else "", str(index.value)))
        elif isinstance(index, int):
            self.keys.append(f"{self.keys[-1] if self.keys else ''}[{index}]")
        else:
            self.keys.append(self.keys[-1] if self.keys else "")
        try:
            if len(self.keys) > MAX_YAML_DEPTH:
                self._fail(f"nested deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.keys.pop()

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is None:
            return None
        items = node.value if isinstance(node, yaml.MappingNode) else [(None, node)]
        sizes: dict[int, int] = {}
        total = 0
        for key, value in items:
            total += _expanded_size(value, sizes)
            if total > MAX_YAML_NODES:
                self.keys.append(str(key.value) if isinstance(key, yaml.ScalarNode) else "")
                self._fail(f"more than {MAX_YAML_NODES} values once aliases are expanded",
                           value.start_mark)
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # PyYAML's constructors for explicit tags trust the text: `!!float ""` raises
        # IndexError, `!!timestamp x` AttributeError, `!!int` of 5,000 digits ValueError.
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, IndexError, AttributeError, OverflowError):
            raise yaml.constructor.ConstructorError(
                None, None, f"not a valid {node.tag.rpartition(':')[2]}: {show(node.value)}",
                node.start_mark) from None

    def _fail(self, problem: str, mark: yaml.Mark) -> None:
        where = self.keys[-1] if self.keys else ""
        raise yaml.composer.ComposerError(None, None, f"{where}: {problem}" if where else problem,
                                          mark)


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Nodes under `node` with every alias expanded (shared nodes counted once per use,
    each computed once); a node that contains itself counts as unbounded."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    sizes[key] = MAX_YAML_NODES + 1  # while in progress: a cycle reads as too large
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    else:
        children = []
    total = 1
    for child in children:
        total += _expanded_size(child, sizes)
        if total > MAX_YAML_NODES:
            break
    sizes[key] = total
    return total


def read_yaml(path: str, max_bytes: int = MAX_CONFIG_BYTES) -> object:
    """A YAML file's document, bounded in bytes, depth and alias expansion; every
    problem is a ConfigErrors naming the file (and line)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigErrors([ConfigError(path, f"cannot read: {exc.strerror}")]) from None
    if len(data) > max_bytes:
        raise ConfigErrors([ConfigError(path, f"larger than {max_bytes >> 20} MiB: "
                                              "not a config file")])
    try:
        return yaml.load(data.decode("utf-8"), Loader=_BoundedLoader)  # safe: a SafeLoader
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigErrors([ConfigError(where, f"not valid YAML: {problem}")]) from None


def load_config(path: str) -> Config:
    """Read and validate a YAML config file (at most MAX_CONFIG_BYTES)."""
    return build_config(read_yaml(path), os.path.dirname(os.path.abspath(path)))
