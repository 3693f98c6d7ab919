"""Snapshot -> Prometheus metric families. The one place metric names live.

Collectors build metric families from one immutable Snapshot (the client_python
custom-collector pattern), so a scrape never reads half-updated state; `Exposition`
renders them once per Snapshot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from monitor.core.aggregate import ModelSnapshot, Snapshot

VERSION = "0.1.0"

# (metric, help, ModelSnapshot attribute) for the per-window gauges.
WINDOW_GAUGES = (
    ("model_drift_kl_divergence", "KL(A_ref || B_window) in nats", "kl_divergence"),
    ("model_drift_cross_entropy", "Cross-entropy H(A_ref, B_window) in nats", "cross_entropy"),
    ("model_drift_prediction_kl_divergence",
     "KL(B_ref || B_window) in nats: output drift, no labels needed", "prediction_kl_divergence"),
    ("model_drift_js_divergence", "Jensen-Shannon divergence of A_ref and B_window in nats",
     "js_divergence"),
    ("model_drift_log_loss", "Mean -ln p(label) over the labelled predictions in the window",
     "log_loss"),
    ("model_drift_label_kl_divergence",
     "KL(A_window || A_ref) in nats: the window's own labels against the reference",
     "label_kl_divergence"),
    ("model_drift_brier_score", "Mean Brier score over the labelled predictions in the window",
     "brier_score"),
    ("model_drift_accuracy", "Share of the window's labelled predictions whose argmax is the label",
     "accuracy"),
    ("model_drift_expected_calibration_error",
     "Expected calibration error over 10 confidence bins of the window's labelled predictions",
     "expected_calibration_error"),
    ("model_drift_label_shift_pvalue",
     "p-value of: the window's labels come from the reference's label distribution",
     "label_shift_pvalue"),
    ("model_drift_prediction_shift_pvalue",
     "p-value of: the window's mean output equals the reference's", "prediction_shift_pvalue"),
    ("model_drift_log_loss_shift_pvalue",
     "One-sided p-value of: the window's mean log loss is not above the reference's",
     "log_loss_shift_pvalue"),
    ("model_drift_calibration_pvalue",
     "p-value of: the window's labels agree with its predicted probabilities",
     "calibration_pvalue"),
    ("model_drift_window_predictions", "Predictions in the window", "window_predictions"),
    ("model_drift_window_labels", "Labelled predictions in the window", "window_labels"),
)
MODEL_GAUGES = (
    ("model_drift_reference_entropy", "Entropy S(A_ref) of the reference labels in nats",
     "reference_entropy"),
    ("model_drift_reference_labels", "Labels in the reference (weighted, for decay)",
     "reference_labels"),
    ("model_drift_reference_log_loss",
     "Mean -ln p(label) over the reference's labelled predictions", "reference_log_loss"),
    ("model_drift_last_event_timestamp_seconds", "Newest event time seen", "last_event_ts"),
)
MODEL_COUNTERS = (
    ("model_drift_predictions", "Predictions ingested", "predictions_total"),
    ("model_drift_log_loss_sum",
     "Sum of -ln max(p(label), epsilon) over every labelled prediction ingested",
     "log_loss_sum_total"),
)
CLASS_COUNTERS = (
    ("model_drift_labels", "Labels per class", "labels_total"),
    ("model_drift_probability", "Sum of predicted probability per class", "probability_total"),
)
JOIN_METRICS = (
    (GaugeMetricFamily, "drift_monitor_pending_labels",
     "Predictions with an id waiting for their label", "pending"),
    (CounterMetricFamily, "drift_monitor_label_joins", "Labels joined to their prediction",
     "joins"),
    (CounterMetricFamily, "drift_monitor_label_expired",
     "Predictions or labels dropped unjoined (ttl, max_pending)", "expired"),
)


def _finite(value: float) -> bool:
    return value is not None and math.isfinite(value)


def model_families(models: tuple[ModelSnapshot, ...]) -> Iterator[Metric]:
    for name, doc, attr in WINDOW_GAUGES:
        family = GaugeMetricFamily(name, doc, labels=["model", "window"])
        for m in models:
            for window, value in zip(m.windows, getattr(m, attr)):
                if _finite(value):
                    family.add_metric([m.name, window], float(value))
        yield family
    for name, doc, attr in MODEL_GAUGES:
        family = GaugeMetricFamily(name, doc, labels=["model"])
        for m in models:
            if _finite(getattr(m, attr)):
                family.add_metric([m.name], float(getattr(m, attr)))
        yield family
    for name, doc, attr in MODEL_COUNTERS:
        counter = CounterMetricFamily(name, doc, labels=["model"])
        for m in models:
            counter.add_metric([m.name], float(getattr(m, attr)))
        yield counter
    for name, doc, attr in CLASS_COUNTERS:
        per_class = CounterMetricFamily(name, doc, labels=["model", "class"])
        for m in models:
            for cls, value in zip(m.classes, getattr(m, attr)):
                per_class.add_metric([m.name, cls], float(value))
        yield per_class


# Per-source counters: (name, help, second label, SourceSnapshot attribute: label -> n).
LINE_COUNTERS = (
    ("drift_monitor_lines", "Lines read, by status", "status", "lines"),
    ("drift_monitor_rejected_lines", "Rejected lines, by reason", "reason", "rejected"),
)
FILE_COUNTERS = (
    ("drift_monitor_skipped_files", "Files matched by a glob and not read, by reason",
     "reason", "skipped_files"),
    ("drift_monitor_file_events",
     "Followed files renamed away or deleted, truncated, or copied", "event", "file_events"),
)


def _source_families(snapshot: Snapshot, table: tuple[tuple[str, str, str, str], ...]
                     ) -> Iterator[Metric]:
    for name, doc, label, attr in table:
        family = CounterMetricFamily(name, doc, labels=["source", label])
        for s in snapshot.sources:
            for value, n in getattr(s, attr).items():
                family.add_metric([s.name, value], float(n))
        yield family


def line_families(snapshot: Snapshot) -> Iterator[Metric]:
    """Lines read per source and status, rejections per reason."""
    return _source_families(snapshot, LINE_COUNTERS)


def monitor_families(snapshot: Snapshot) -> Iterator[Metric]:
    yield from line_families(snapshot)
    yield from _source_families(snapshot, FILE_COUNTERS)
    for kind, name, doc, attr in JOIN_METRICS:
        family = kind(name, doc, labels=["model"])
        for j in snapshot.joins:
            family.add_metric([j.model], float(getattr(j, attr)))
        yield family
    duplicates = CounterMetricFamily("drift_monitor_label_duplicates",
                                     "Later labels for an id already labelled (the first counts)",
                                     labels=["source"])
    for source, n in snapshot.duplicates.items():
        duplicates.add_metric([source], float(n))
    yield duplicates


class _Families(Collector):
    def __init__(self, families: Callable[[], Iterator[Metric]]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return self.families()


def _registry(families: Callable[[], Iterator[Metric]]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return registry


class Exposition:
    """Renders /metrics. The Snapshot's families (thousands of samples with 100 models)
    are rendered once per Snapshot and the bytes reused until the next one, so a scrape
    costs a dictionary lookup instead of ~20 ms of GIL-holding rendering that would
    stall ingestion; only checkpoint health is rendered at each scrape."""

    def __init__(
        self,
        current: Callable[[], Snapshot | None],
        checkpoint_age_s: Callable[[], float],
        checkpoint_failures: Callable[[], int],
        source_files: Callable[[], Mapping[str, int]],
    ) -> None:
        self.current = current
        self.checkpoint_age_s = checkpoint_age_s
        self.checkpoint_failures = checkpoint_failures
        self.source_files = source_files
        self.live = _registry(self._health)
        # The standard process_*, python_info and python_gc_* series every client_python
        # exporter has, on our own registry (the global REGISTRY is not served).
        ProcessCollector(registry=self.live)
        PlatformCollector(registry=self.live)
        GCCollector(registry=self.live)
        # content type -> (the Snapshot rendered, its bytes); scrapes run in threads,
        # and a lost race only renders twice.
        self.cache: dict[str, tuple[Snapshot, bytes]] = {}

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The body of a scrape and its content type, negotiated from `accept`."""
        encoder, content_type = choose_encoder(accept or "")
        snapshot = self.current()
        body = b""
        if snapshot is not None:
            cached = self.cache.get(content_type)
            if cached is None or cached[0] is not snapshot:
                body = encoder(_registry(lambda: _snapshot_families(snapshot)))
                self.cache[content_type] = (snapshot, body)
            else:
                body = cached[1]
            body = body.removesuffix(EOF)  # OpenMetrics ends once, after the live part
        return body + encoder(self.live), content_type

    def _health(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("drift_monitor_checkpoint_age_seconds",
                                "Seconds since the last durable checkpoint",
                                value=self.checkpoint_age_s())
        yield CounterMetricFamily("drift_monitor_checkpoint_failures",
                                  "Checkpoint writes that failed", value=self.checkpoint_failures())
        info = GaugeMetricFamily("drift_monitor_build_info", "Build information; always 1",
                                 labels=["version"])
        info.add_metric([VERSION], 1.0)
        yield info
        files = GaugeMetricFamily("drift_monitor_source_files",
                                  "Files a source follows now (0: its glob matches no file)",
                                  labels=["source"])
        for source, n in self.source_files().items():
            files.add_metric([source], float(n))
        yield files


def _snapshot_families(snapshot: Snapshot) -> Iterator[Metric]:
    yield from model_families(snapshot.models)
    yield from monitor_families(snapshot)


EOF = b"# EOF\n"


def replay_families(snapshot: Snapshot) -> Iterator[Metric]:
    """What replay prints: the model_drift_* families and the line counters."""
    yield from model_families(snapshot.models)
    yield from line_families(snapshot)


def samples(snapshot: Snapshot) -> list[dict]:
    """The samples of `replay_families` as /metrics shows them, for `replay --json`."""
    return [
        {"name": s.name, "labels": dict(s.labels), "value": s.value}
        for family in replay_families(snapshot)
        for s in family.samples
    ]
