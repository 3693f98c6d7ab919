"""Per-model state: reference, windows and counters; `ingest(batch, now)` and `snapshot(now)`.

Pure: time is an argument. The window clock T is max(newest event time, `now`); replay
passes now=-inf so its clock is the newest event read.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from monitor import divergence
from monitor.config import Config, LabelSourceConfig, ModelConfig, SourceConfig
from monitor.decode import BlockDecoder
from monitor.join import Joined, JoinStore
from monitor.parse import Predictions, Reason, Reject, parse_labels, parse_predictions
from monitor.reference import make_reference
from monitor.window import (
    LABELLED,
    LOGLOSS,
    PRED,
    PROBS,
    CountWindow,
    TimeWindow,
    label_rows,
    sum_rows,
)

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ModelSnapshot:
    """Every exported value of one model; NaN means "not exported" (undefined or too few)."""

    name: str
    classes: tuple[str, ...]
    windows: tuple[str, ...]
    window_predictions: Array
    window_labels: Array
    kl_divergence: Array
    cross_entropy: Array
    js_divergence: Array
    prediction_kl_divergence: Array
    log_loss: Array
    reference_entropy: float
    reference_labels: float
    predictions_total: int
    labels_total: npt.NDArray[np.int64]
    probability_total: Array
    last_event_ts: float


def log_loss_terms(probs: Array, labels: npt.NDArray[np.int64], epsilon: float) -> Array:
    """-ln max(p(label), epsilon) per row; 0 where the label is unknown."""
    p = probs[np.arange(len(labels)), np.maximum(labels, 0)]
    return np.where(labels >= 0, -np.log(np.maximum(p, epsilon)), 0.0)


class ModelState:
    def __init__(self, name: str, config: ModelConfig) -> None:
        k = len(config.classes)
        self.name = name
        self.config = config
        self.k = k
        self.reference = make_reference(config.reference, k)
        self.windows: list[TimeWindow | CountWindow] = [
            TimeWindow(w.duration_s, k) if w.duration_s is not None
            else CountWindow(w.count or 1, k, config.epsilon)
            for w in config.windows
        ]
        self.time_windows = [w for w in self.windows if isinstance(w, TimeWindow)]
        self.shortest = min(self.time_windows, key=lambda w: w.duration_s, default=None)
        self.clock = -math.inf
        self.predictions_total = 0
        self.labels_total = np.zeros(k, dtype=np.int64)
        self.probability_total = np.zeros(k)
        self.last_event_ts = -math.inf

    def advance(self, now: float) -> None:
        """Move every window's clock to max(now, newest event)."""
        self.clock = max(self.clock, now)
        if math.isfinite(self.clock):
            self.reference.advance(self.clock)
            for window in self.time_windows:
                window.advance(self.clock)

    def ingest(self, batch: Predictions, now: float) -> npt.NDArray[np.bool_]:
        """Add a batch of predictions in arrival order; returns which lines were late.

        A line is late when its time is before the start of the shortest time window
        as the clock stood when it arrived (the running max over the batch, so a batch
        gives the same answer as one line at a time). Late lines still count in the
        reference, the counters and the count windows.
        """
        n = len(batch.ts)
        if n == 0:
            return np.zeros(0, dtype=bool)
        running = np.maximum.accumulate(np.maximum(batch.ts, max(self.clock, now)))
        late = self.shortest.outside(batch.ts, running) if self.shortest else np.zeros(n, bool)
        self.advance(float(running[-1]))
        logloss = log_loss_terms(batch.probs, batch.labels, self.config.epsilon)
        rows = sum_rows(batch.probs, batch.labels, logloss)
        self.reference.add(batch.ts, rows)
        for window in self.windows:
            if isinstance(window, TimeWindow):
                window.add(batch.ts, rows)
            else:
                window.add(batch.probs, batch.labels)
        known = batch.labels[batch.labels >= 0]
        self.predictions_total += n
        self.labels_total += np.bincount(known, minlength=self.k)
        self.probability_total += rows[:, PROBS:PROBS + self.k].sum(axis=0)
        self.last_event_ts = max(self.last_event_ts, float(batch.ts.max()))
        return late

    def add_labels(self, joined: Joined) -> None:
        """Labels joined to earlier predictions, placed at the prediction's time: into
        the reference, the counters, and every window that still holds the prediction."""
        if len(joined.labels) == 0:
            return
        logloss = log_loss_terms(joined.probs, joined.labels, self.config.epsilon)
        rows = label_rows(joined.labels, logloss, self.k)
        self.reference.add(joined.ts, rows)
        for window in self.windows:
            if isinstance(window, TimeWindow):
                window.add(joined.ts, rows)
            else:
                window.set_labels(joined.seq, joined.labels)
        self.labels_total += np.bincount(joined.labels, minlength=self.k)

    def snapshot(self, now: float) -> ModelSnapshot:
        self.advance(now)
        cfg, k = self.config, self.k
        totals = np.array([w.total() for w in self.windows]).reshape(len(self.windows), -1)
        ref = self.reference.total()
        if cfg.reference.prior is not None:
            a = np.asarray(cfg.reference.prior)
        else:
            a = divergence.normalize_counts(ref[PROBS + k:], cfg.smoothing)
        with np.errstate(invalid="ignore", divide="ignore"):
            b = divergence.floor(totals[:, PROBS:PROBS + k] / totals[:, PRED:PRED + 1], cfg.epsilon)
            b_ref = ref[PROBS:PROBS + k] / ref[PRED]
            log_loss = totals[:, LOGLOSS] / totals[:, LABELLED]
        enough = totals[:, PRED] >= max(cfg.min_samples, 1)

        def exported(values: Array) -> Array:
            return np.where(enough, values, np.nan)

        return ModelSnapshot(
            name=self.name,
            classes=cfg.classes,
            windows=tuple(w.name for w in cfg.windows),
            window_predictions=totals[:, PRED].copy(),
            window_labels=totals[:, LABELLED].copy(),
            kl_divergence=exported(divergence.kl(a, b)),
            cross_entropy=exported(divergence.cross_entropy(a, b)),
            js_divergence=exported(divergence.js(a, b)),
            prediction_kl_divergence=exported(divergence.kl(b_ref, b)),
            log_loss=exported(log_loss),
            reference_entropy=float(divergence.entropy(a)),
            reference_labels=float(ref[LABELLED]),
            predictions_total=self.predictions_total,
            labels_total=self.labels_total.copy(),
            probability_total=self.probability_total.copy(),
            last_event_ts=self.last_event_ts,
        )

    def state(self) -> dict[str, Array]:
        """Arrays that restore this model exactly (for the checkpoint)."""
        out: dict[str, Array] = {
            "clock": np.array([self.clock, self.last_event_ts]),
            "predictions_total": np.array([self.predictions_total]),
            "labels_total": self.labels_total,
            "probability_total": self.probability_total,
        }
        out.update({f"reference.{key}": v for key, v in self.reference.state().items()})
        for spec, window in zip(self.config.windows, self.windows):
            out.update({f"window.{spec.name}.{key}": v for key, v in window.state().items()})
        return out

    def restore(self, state: dict[str, Array], *, same_reference: bool = True) -> None:
        """Load what `state()` wrote; windows not in it (new in the config) start empty."""
        self.clock, self.last_event_ts = (float(x) for x in state["clock"])
        self.predictions_total = int(state["predictions_total"][0])
        self.labels_total[:] = state["labels_total"]
        self.probability_total[:] = state["probability_total"]
        if same_reference:
            self.reference.restore(_prefixed(state, "reference."))
        for spec, window in zip(self.config.windows, self.windows):
            part = _prefixed(state, f"window.{spec.name}.")
            if part:
                window.restore(part)
            elif isinstance(window, CountWindow):
                # New in the config: empty, but numbered like the model's predictions so
                # that labels joined later land on the right rows.
                window.seen = self.predictions_total


def _prefixed(state: Mapping[str, Array], prefix: str) -> dict[str, Array]:
    """The arrays under `prefix`, read only those (a checkpoint reads arrays on access)."""
    return {key[len(prefix):]: state[key] for key in state if key.startswith(prefix)}


class Models:
    """The model streams: configured ones from start-up, others admitted through
    `models.default` in order of first line, up to `max_models` in all."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.states: dict[str, ModelState] = {
            name: ModelState(name, model) for name, model in config.models.items()
        }

    def __iter__(self) -> Iterator[ModelState]:
        return iter(self.states.values())

    def __getitem__(self, name: str) -> ModelState:
        return self.states[name]

    def classes(self, name: str) -> tuple[str, ...] | Reason:
        """Classes of `name` (through the default template for a new name), not admitting it."""
        state = self.states.get(name)
        if state is not None:
            return state.config.classes
        if self.config.default_model is None:
            return Reason.UNKNOWN_MODEL
        return self.config.default_model.classes

    def admit(self, name: str) -> Reason | None:
        """Take `name` in through the default template if there is room."""
        if name in self.states:
            return None
        if self.config.default_model is None:
            return Reason.UNKNOWN_MODEL
        if len(self.states) >= self.config.max_models:
            return Reason.TOO_MANY_MODELS
        self.states[name] = ModelState(name, self.config.default_model)
        return None


class _FedBy:
    """The models a label source may label: its own `model`, or any when it has none."""

    def __init__(self, models: Models, source: LabelSourceConfig) -> None:
        self.models = models
        self.source = source

    def classes(self, name: str) -> tuple[str, ...] | Reason:
        if self.source.model is not None and name != self.source.model:
            return Reason.UNKNOWN_MODEL
        return self.models.classes(name)

    def admit(self, name: str) -> Reason | None:
        return self.models.admit(name)


@dataclass(frozen=True, slots=True)
class SourceSnapshot:
    name: str
    lines: dict[str, int]  # status -> lines
    rejected: dict[str, int]  # reason -> lines
    skipped_files: dict[str, int]  # reason -> files the glob matched and we never read


@dataclass(frozen=True, slots=True)
class JoinSnapshot:
    model: str
    pending: int
    joins: int
    expired: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything /metrics and replay show, as of one instant; never mutated."""

    models: tuple[ModelSnapshot, ...]
    sources: tuple[SourceSnapshot, ...]
    joins: tuple[JoinSnapshot, ...]
    duplicates: dict[str, int]
    taken_at: float


STATUSES = ("ok", "rejected", "late")
# Why a file matched by a source's glob is not read (tail.py decides; each file once).
SKIP_REASONS = ("compressed", "not_regular", "pseudo", "symlink_outside")


class SourceCounters:
    def __init__(self) -> None:
        self.lines = dict.fromkeys(STATUSES, 0)
        self.rejected = {reason.value: 0 for reason in Reason}
        self.skipped_files = dict.fromkeys(SKIP_REASONS, 0)

    def snapshot(self, name: str) -> SourceSnapshot:
        return SourceSnapshot(name, dict(self.lines), dict(self.rejected),
                              dict(self.skipped_files))


class Aggregator:
    """All ingestion state: the models and per-source line counters.

    `ingest_predictions` takes a block of raw lines and returns the rejects so that
    the shell can log them; nothing here reads a clock or writes a file.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.models = Models(config)
        self.counters = {s.name: SourceCounters() for s in (*config.sources, *config.labels)}
        self.stores: dict[str, JoinStore] = {}
        self.decoders: dict[str, BlockDecoder | bool | None] = {}
        self.duplicates = {s.name: 0 for s in config.labels}

    def _store(self, model: ModelState) -> JoinStore | None:
        """The model's pending-label store, when a label source feeds this model."""
        store = self.stores.get(model.name)
        if store is None:
            source = next((s for s in self.config.labels if s.model == model.name), None) or next(
                (s for s in self.config.labels if s.model is None), None)
            if source is None:
                return None
            store = self.stores[model.name] = JoinStore(model.k, source.join_ttl_s,
                                                        source.max_pending)
        return store

    def _decoder(self, source: SourceConfig) -> BlockDecoder | None:
        decoder = self.decoders.get(source.name, False)
        if decoder is False:
            wanted = ("timestamp", "model", "probabilities", "label", "id")
            try:
                decoder = BlockDecoder(source.fields, wanted)
            except ValueError:
                decoder = None  # overlapping field paths: the plain path handles them
            self.decoders[source.name] = decoder
        return decoder

    def ingest_predictions(self, source: SourceConfig, data: bytes, lines: int, now: float,
                           arrival: float) -> list[Reject]:
        """Parse and aggregate a block of `lines` complete lines; `arrival` stamps lines
        without a time."""
        parsed = parse_predictions(data, lines, source.fields, source.model, self.models,
                                   arrival, self.config.sum_tolerance, self._decoder(source))
        late = 0
        for name, batch in parsed.predictions.items():
            model = self.models[name]
            seq = model.predictions_total + np.arange(len(batch.ts))
            late += int(model.ingest(batch, now).sum())
            store = self._store(model)
            if store is None:
                continue
            rows = [i for i, (x, label) in enumerate(zip(batch.ids, batch.labels.tolist()))
                    if x is not None and label < 0]
            if rows:
                index = np.asarray(rows)
                model.add_labels(store.add_predictions(
                    [batch.ids[i] for i in rows], batch.ts[index], seq[index], batch.probs[index]))
            store.expire(model.clock)
        self.count(self.counters[source.name], lines, parsed.rejects, late, parsed.blank)
        return parsed.rejects

    def ingest_labels(self, source: LabelSourceConfig, data: bytes, lines: int, now: float,
                      arrival: float) -> list[Reject]:
        """Join a block of label lines to waiting predictions (or keep them waiting)."""
        default = source.model
        if default is None and len(self.config.models) == 1:
            default = next(iter(self.config.models))
        parsed = parse_labels(data, source.fields, default, _FedBy(self.models, source), arrival)
        labels = parsed.labels
        assert labels is not None
        for name in dict.fromkeys(labels.model):
            model = self.models[name]
            store = self._store(model)
            assert store is not None  # this label source feeds it
            rows = np.asarray([i for i, m in enumerate(labels.model) if m == name])
            before = store.duplicates
            model.add_labels(store.add_labels([labels.ids[i] for i in rows], labels.labels[rows],
                                              labels.ts[rows]))
            self.duplicates[source.name] += store.duplicates - before
            model.advance(now)
            store.expire(model.clock)
        self.count(self.counters[source.name], lines, parsed.rejects, 0, parsed.blank)
        return parsed.rejects

    def skip_files(self, source_name: str, reason: str, n: int) -> None:
        self.counters[source_name].skipped_files[reason] += n

    def reject_too_long(self, source_name: str) -> None:
        self.count(self.counters[source_name], 1, [Reject(0, Reason.TOO_LONG)], 0, 0)

    @staticmethod
    def count(counters: SourceCounters, n: int, rejects: list[Reject], late: int, blank: int) -> None:
        for reject in rejects:
            counters.rejected[reject.reason.value] += 1
        counters.lines["rejected"] += len(rejects)
        counters.lines["late"] += late
        counters.lines["ok"] += n - len(rejects) - late - blank

    def snapshot(self, now: float) -> Snapshot:
        return Snapshot(
            models=tuple(m.snapshot(now) for m in self.models),
            sources=tuple(c.snapshot(name) for name, c in self.counters.items()),
            joins=tuple(self._join_snapshot(m) for m in self.models),
            duplicates=dict(self.duplicates),
            taken_at=now,
        )

    def _join_snapshot(self, model: ModelState) -> JoinSnapshot:
        store = self.stores.get(model.name)
        if store is None:
            return JoinSnapshot(model.name, 0, 0, 0)
        store.expire(model.clock)
        return JoinSnapshot(model.name, store.pending, store.joins, store.expired)

    def state(self) -> tuple[dict, dict[str, Array]]:
        """JSON-able metadata and named arrays that restore this aggregator exactly."""
        meta: dict = {"models": [], "sources": {}, "duplicates": self.duplicates}
        arrays: dict[str, Array] = {}
        for i, model in enumerate(self.models):
            entry = {"name": model.name, "classes": list(model.config.classes),
                     "reference": repr(model.config.reference)}
            arrays.update({f"m{i}.{key}": v for key, v in model.state().items()})
            store = self.stores.get(model.name)
            if store is not None:
                entry["join"], join_arrays = store.state()
                arrays.update({f"j{i}.{key}": v for key, v in join_arrays.items()})
            meta["models"].append(entry)
        for name, c in self.counters.items():
            meta["sources"][name] = {"lines": c.lines, "rejected": c.rejected,
                                     "skipped_files": c.skipped_files}
        return meta, arrays

    def restore(self, meta: dict, arrays: Mapping[str, Array]) -> list[str]:
        """Load `state()` output; returns the names of models whose state was dropped
        because their classes changed (or no longer fit under max_models)."""
        dropped = []
        for i, entry in enumerate(meta["models"]):
            name = entry["name"]
            if (self.models.classes(name) != tuple(entry["classes"])
                    or self.models.admit(name) is not None):
                dropped.append(name)
                continue
            model = self.models[name]
            model.restore(_prefixed(arrays, f"m{i}."),
                          same_reference=entry["reference"] == repr(model.config.reference))
            store = self._store(model) if "join" in entry else None
            if store is not None:
                store.restore(entry["join"], _prefixed(arrays, f"j{i}."))
        for name, n in meta["duplicates"].items():
            if name in self.duplicates:
                self.duplicates[name] = n
        for name, saved in meta["sources"].items():
            counters = self.counters.get(name)
            if counters is not None:
                counters.lines.update(saved["lines"])
                counters.rejected.update(saved["rejected"])
                counters.skipped_files.update(saved.get("skipped_files", {}))
        return dropped

    def reconfigure(self, config: Config) -> tuple[Aggregator, list[str]]:
        """The aggregator for a reloaded config: it restores this one's state, as a
        restart would, so every model whose classes are unchanged keeps its state.
        Also returns the models whose state was dropped."""
        fresh = Aggregator(config)
        meta, arrays = self.state()
        return fresh, fresh.restore(meta, arrays)
