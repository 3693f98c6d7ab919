"""The configuration as frozen values: what every stage is given, and nothing that reads
a file. `monitor.shell.config` builds these from YAML and validates them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timezone as _timezone
from datetime import tzinfo
from types import MappingProxyType

FieldPath = tuple[str, ...]
UTC: tzinfo = _timezone.utc
DEFAULT_MAX_ID_BYTES = 256
DEFAULT_MAX_SKEW_S = 300.0


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


FORMATS = ("jsonl", "bentoml", "sagemaker")  # of files; `kserve` is the spool of an http source
# Where BentoML's monitoring data logs keep each value; probabilities, prediction and
# label default to the empty path: "the column the schema file gives that role".
BENTOML_FIELDS = Fields(timestamp=("timestamp",), probabilities=(), prediction=(), label=(),
                        id=("request_id",))
SPOOL_FOLDER = "spool"  # under state_dir: one folder per http source
MAX_SPOOL_BYTES = 256 << 20


@dataclass(frozen=True, slots=True)
class LogSource:
    """What every log source has; a source is a SourceConfig or a LabelSourceConfig."""

    name: str
    path: str
    model: str | None = None
    fields: Fields = Fields()
    start_at: str = "beginning"
    format: str = "jsonl"
    timezone: tzinfo = UTC  # of RFC 3339 timestamps without an offset
    follow_symlinks: bool = False  # links out of the glob's folder: read, or skipped


@dataclass(frozen=True, slots=True)
class SourceConfig(LogSource):
    """A prediction log."""


@dataclass(frozen=True, slots=True)
class LabelSourceConfig(LogSource):
    """A log of true labels, joined to predictions by request id."""

    join_ttl_s: float = 86400.0
    max_pending: int = 1_000_000


@dataclass(frozen=True, slots=True)
class HttpSourceConfig:
    """Events POSTed to `path` on `listen`, spooled in `state_dir` and read from there
    by the prediction source of the same name (see `spool_source`)."""

    name: str
    path: str  # URL path, e.g. /kserve/fraud
    model: str | None = None
    output: str | None = None  # the v2 output tensor to read (default: the first)
    max_spool_bytes: int = MAX_SPOOL_BYTES
    format: str = "kserve"


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
    max_id_bytes: int = DEFAULT_MAX_ID_BYTES
    max_clock_skew_s: float = DEFAULT_MAX_SKEW_S
    max_open_files: int = 512  # log files held open at once, over every source
    sum_tolerance: float = 1e-3
    sources: tuple[SourceConfig, ...] = ()
    labels: tuple[LabelSourceConfig, ...] = ()
    http_sources: tuple[HttpSourceConfig, ...] = ()
    models: Mapping[str, ModelConfig] = field(default_factory=lambda: MappingProxyType({}))
    default_model: ModelConfig | None = None
    web_config_file: str | None = None  # exporter-toolkit web config: TLS, basic auth
