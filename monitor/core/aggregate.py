"""Per-model state: reference, windows and counters; `ingest(batch, now)`, `advance(now)`
and `snapshot()`.

Pure: time is an argument. The window clock T is max(newest event time, `now`); replay
passes now=-inf so its clock is the newest event read. Only ingesting and `advance` move
it: `snapshot()` is a read, so the shell advances first to let idle windows move with
the wall clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from monitor.core import divergence, formats, schema, stats
from monitor.core.decode import BlockDecoder
from monitor.core.errors import CheckpointError
from monitor.core.join import Joined, JoinStore, Op
from monitor.core.parse import (
    Known,
    Labels,
    Parsed,
    Predictions,
    Reason,
    Reject,
    ahead,
    class_index,
    model_detail,
    parse_labels,
    parse_predictions,
)
from monitor.core.reference import make_reference
from monitor.core.settings import Config, LabelSourceConfig, ModelConfig, SourceConfig
from monitor.core.window import (
    BLOCK_LOGLOSS,
    LABELLED,
    LOGLOSS,
    PRED,
    Added,
    CountWindow,
    Labelled,
    Layout,
    Recent,
    TimeWindow,
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
    label_kl_divergence: Array
    brier_score: Array
    accuracy: Array
    expected_calibration_error: Array
    label_shift_pvalue: Array
    prediction_shift_pvalue: Array
    log_loss_shift_pvalue: Array
    calibration_pvalue: Array
    reference_entropy: float
    reference_labels: float
    reference_log_loss: float
    predictions_total: int
    labels_total: npt.NDArray[np.int64]
    probability_total: Array
    log_loss_sum_total: float
    last_event_ts: float


class ModelState:
    def __init__(self, name: str, config: ModelConfig) -> None:
        k = len(config.classes)
        self.name = name
        self.config = config
        self.k = k
        self.layout = Layout(k)
        self.reference = make_reference(config.reference, k)
        self.windows: list[Recent] = [
            TimeWindow(w.duration_s, k) if w.duration_s is not None
            else CountWindow(w.count or 1, k, config.epsilon)
            for w in config.windows
        ]
        # Lateness is against the shortest time window (a count window's span is inf and
        # no line is late to it).
        self.shortest = min(self.windows, key=lambda w: w.duration_s, default=None)
        self.clock = -math.inf
        self.predictions_total = 0
        self.labels_total = np.zeros(k, dtype=np.int64)
        self.probability_total = np.zeros(k)
        self.log_loss_sum_total = 0.0
        self.last_event_ts = -math.inf

    def advance(self, now: float) -> ModelState:
        """Move every window's clock to max(now, newest event); returns self."""
        self.clock = max(self.clock, now)
        if math.isfinite(self.clock):
            self.reference.advance(self.clock)
            for window in self.windows:
                window.advance(self.clock)
        return self

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
        added = Added.of(batch.ts, batch.probs, batch.labels, self.config.epsilon)
        self.reference.add(added)
        for window in self.windows:
            window.add(added)
        known = batch.labels[batch.labels >= 0]
        self.predictions_total += n
        self.labels_total += np.bincount(known, minlength=self.k)
        self.probability_total += batch.probs.sum(axis=0)
        self.log_loss_sum_total += float(added.labelled[:, BLOCK_LOGLOSS].sum())
        self.last_event_ts = max(self.last_event_ts, float(batch.ts.max()))
        return late

    def add_labels(self, joined: Joined) -> None:
        """Labels joined to earlier predictions, placed at the prediction's time: into
        the reference, the counters, and every window that still holds the prediction."""
        if len(joined.labels) == 0:
            return
        labelled = Labelled.of(joined.ts, joined.seq, joined.probs, joined.labels,
                               self.config.epsilon)
        self.reference.label(labelled)
        for window in self.windows:
            window.label(labelled)
        self.labels_total += np.bincount(joined.labels, minlength=self.k)
        self.log_loss_sum_total += float(labelled.rows[:, BLOCK_LOGLOSS].sum())

    def snapshot(self) -> ModelSnapshot:
        """Every exported value as the clock stands (see `advance`); changes nothing."""
        cfg, lay = self.config, self.layout
        totals = np.array([w.total() for w in self.windows]).reshape(len(self.windows), -1)
        ref = self.reference.total()
        if cfg.reference.prior is not None:
            a = np.asarray(cfg.reference.prior)
        else:
            a = divergence.normalize_counts(ref[lay.labels], cfg.smoothing)
        labelled = totals[:, LABELLED]
        with np.errstate(invalid="ignore", divide="ignore"):
            b = divergence.floor(totals[:, lay.probs] / totals[:, PRED:PRED + 1], cfg.epsilon)
            b_ref = ref[lay.probs] / ref[PRED]
            log_loss = totals[:, LOGLOSS] / labelled
            a_window = divergence.normalize_counts(totals[:, lay.labels], cfg.smoothing)
            # sum_b (l_b / l) |acc_b - conf_b| = sum_b |correct_b - confidence sum_b| / l
            gaps = np.abs(totals[:, lay.ece_correct] - totals[:, lay.ece_confidence])
            ece = gaps.sum(axis=1) / labelled
            brier = totals[:, lay.brier] / labelled
            accuracy = totals[:, lay.correct] / labelled
            reference_log_loss = ref[LOGLOSS] / ref[LABELLED]
        # Gates: values from the window's predictions need min_samples predictions, values
        # from its labels min_samples labelled predictions.
        gate = max(cfg.min_samples, 1)
        enough = totals[:, PRED] >= gate
        enough_labels = labelled >= gate

        def exported(values: Array) -> Array:
            return np.where(enough, values, np.nan)

        def from_labels(values: Array) -> Array:
            return np.where(enough_labels, values, np.nan)

        pvalues = np.array([self._pvalues(w, t) for w, t in zip(self.windows, totals)])
        pvalues = pvalues.reshape(len(self.windows), 4)

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
            log_loss=from_labels(log_loss),
            label_kl_divergence=from_labels(divergence.kl(a_window, divergence.floor(a, cfg.epsilon))),
            brier_score=from_labels(brier),
            accuracy=from_labels(accuracy),
            expected_calibration_error=from_labels(ece),
            label_shift_pvalue=from_labels(pvalues[:, 0]),
            prediction_shift_pvalue=exported(pvalues[:, 1]),
            log_loss_shift_pvalue=from_labels(pvalues[:, 2]),
            calibration_pvalue=from_labels(pvalues[:, 3]),
            reference_entropy=float(divergence.entropy(a)),
            reference_labels=float(ref[LABELLED]),
            reference_log_loss=float(reference_log_loss),
            predictions_total=self.predictions_total,
            labels_total=self.labels_total.copy(),
            probability_total=self.probability_total.copy(),
            log_loss_sum_total=self.log_loss_sum_total,
            last_event_ts=self.last_event_ts,
        )

    def reference_rest(self, window: Recent, total: Array) -> Array | None:
        """The reference's sums over what is *not* in this window, as plain counts (a
        decayed reference counts as its effective sample size (sum w)^2 / (sum w^2), the
        per-prediction and the labelled columns each by their own); None when the window
        covers the reference. Tests of the window against the reference use this, not the
        reference itself: a reference that holds the window's own events would make the
        window look like it and hide drift, and make the p-values wrong."""
        return self.reference.rest(window, total)

    def _pvalues(self, window: Recent, total: Array) -> tuple[float, ...]:
        """label shift, prediction shift, log-loss shift and calibration p-values of one
        window (NaN where undefined); gates are applied by the caller."""
        cfg, lay = self.config, self.layout
        n, labelled = total[PRED], total[LABELLED]
        observed = total[lay.labels]
        rest = self.reference_rest(window, total)
        label = prediction = logloss = math.nan
        if labelled > 0 and cfg.reference.prior is not None:
            label = stats.label_shift_static(observed, np.asarray(cfg.reference.prior))
        if rest is not None:
            r_n, r_l = rest[PRED], rest[LABELLED]
            if labelled > 0 and r_l >= 1 and cfg.reference.prior is None:
                label = float(stats.label_shift_against(observed, rest[lay.labels]))
            if n > 0 and r_n >= 1:
                prediction = float(stats.mean_shift(n, total[lay.probs], total[lay.squares],
                                                    r_n, rest[lay.probs], rest[lay.squares]))
            if labelled > 0 and r_l >= 1:
                logloss = float(stats.mean_excess(
                    labelled, total[LOGLOSS], total[lay.logloss_squares], r_l, rest[LOGLOSS],
                    rest[lay.logloss_squares], -math.log(cfg.epsilon)))
        calibration = math.nan
        if labelled > 0:
            calibration = float(stats.calibration(observed, total[lay.labelled_probs],
                                                  total[lay.labelled_squares]))
        return label, prediction, logloss, calibration

    def state(self) -> dict[str, npt.NDArray[Any]]:
        """Arrays that restore this model exactly (for the checkpoint)."""
        out: dict[str, npt.NDArray[Any]] = {
            "clock": np.array([self.clock, self.last_event_ts]),
            "predictions_total": np.array([self.predictions_total]),
            "labels_total": self.labels_total,
            "probability_total": self.probability_total,
            "log_loss_sum_total": np.array([self.log_loss_sum_total]),
        }
        out.update({f"reference.{key}": v for key, v in self.reference.state().items()})
        for spec, window in zip(self.config.windows, self.windows):
            out.update({f"window.{spec.name}.{key}": v for key, v in window.state().items()})
        return out

    def restore(self, state: Mapping[str, Array], *, same_reference: bool = True) -> None:
        """Load what `state()` wrote; windows not in it (new in the config) and a
        reference not in it (a v0.1 checkpoint's, see checkpoint._upgrade_v2) start
        empty. Every array must have exactly the dtype and shape this model's own have
        (CheckpointError otherwise): a restore never reshapes or broadcasts."""
        template = self.state()

        def part(prefix: str) -> dict[str, Array]:
            return {key[len(prefix):]: schema.array(state, key, template[key])
                    for key in template if key.startswith(prefix)}

        self.clock, self.last_event_ts = (float(x) for x in schema.array(state, "clock",
                                                                          template["clock"]))
        total = schema.array(state, "predictions_total", template["predictions_total"])
        schema.within(total, 0, 2**62, "predictions_total")
        self.predictions_total = int(total[0])
        self.labels_total[:] = schema.array(state, "labels_total", template["labels_total"])
        self.probability_total[:] = schema.array(state, "probability_total",
                                                 template["probability_total"])
        loss = schema.array(state, "log_loss_sum_total", template["log_loss_sum_total"])
        if not loss[0] >= 0:  # NaN too: a sum of non-negative terms
            raise CheckpointError(f"log_loss_sum_total: {loss[0]} is not a sum of losses")
        self.log_loss_sum_total = float(loss[0])
        if same_reference and any(key.startswith("reference.") for key in state):
            self.reference.restore(part("reference."))
        for spec, window in zip(self.config.windows, self.windows):
            prefix = f"window.{spec.name}."
            if any(key.startswith(prefix) for key in state):
                window.restore(part(prefix))
            else:  # new in the config: it starts empty, after what the model has seen
                window.start_at(self.predictions_total)


def _prefixed(state: Mapping[str, Array], prefix: str) -> dict[str, Array]:
    """The arrays under `prefix`."""
    return {key[len(prefix):]: state[key] for key in state if key.startswith(prefix)}


class Models:
    """The model streams: configured ones from start-up, others admitted through
    `models.default` in order of first line, up to `max_models` in all."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.states: dict[str, ModelState] = {
            name: ModelState(name, model) for name, model in config.models.items()
        }
        self.known = self._known()

    def _known(self) -> Known:
        """The read-only view the parser checks names against; rebuilt on each admission
        (at most max_models times), so a block's lookups cost no copy."""
        template = self.config.default_model
        return Known(MappingProxyType({name: s.config.classes for name, s in self.states.items()}),
                     template.classes if template is not None else None)

    def __iter__(self) -> Iterator[ModelState]:
        return iter(self.states.values())

    def __getitem__(self, name: str) -> ModelState:
        return self.states[name]

    def admit(self, name: str) -> Reason | None:
        """Take `name` in through the default template if there is room."""
        if name in self.states:
            return None
        if self.config.default_model is None:
            return Reason.UNKNOWN_MODEL
        if len(self.states) >= self.config.max_models:
            return Reason.TOO_MANY_MODELS
        self.states[name] = ModelState(name, self.config.default_model)
        self.known = self._known()
        return None

    def admit_new(self, parsed: Parsed) -> None:
        """Admit the models a block brought (`parsed.new`, in order of first accepted
        line); the lines of one refused become rejects with the refusal as reason."""
        for name in parsed.new:
            refusal = self.admit(name)
            if refusal is None:
                continue
            named = model_detail(name)
            batch = parsed.predictions.pop(name, None)
            if batch is not None:
                parsed.rejects.extend(Reject(int(i), refusal, named) for i in batch.index)
            labels = parsed.labels
            if labels is not None:
                keep = [m != name for m in labels.model]
                parsed.rejects.extend(Reject(int(i), refusal, named)
                                      for i, ok in zip(labels.index, keep) if not ok)
                parsed.labels = labels.take(keep)
        if parsed.new:
            parsed.rejects.sort(key=lambda reject: reject.index)


def _decoders(config: Config) -> dict[str, BlockDecoder]:
    """A block decoder per prediction source, built with the config; a source whose
    field paths overlap (`out` and `out.scores`) has none and takes the plain path."""
    wanted = ("timestamp", "model", "probabilities", "label", "id")
    decoders = {}
    for source in config.sources:
        fields = source.fields if source.format == "jsonl" else formats.CANONICAL
        try:
            decoders[source.name] = BlockDecoder(fields, wanted)
        except ValueError:
            continue
    return decoders


def state_budget(config: Config) -> int:
    """The most bytes of arrays `Aggregator.state()` can hold under `config`: every model
    it can have (the configured ones, and up to max_models through the template) and a
    full join store for each model a label source can feed. A checkpoint that declares
    more is refused before anything is read into memory."""
    def model_bytes(name: str, model: ModelConfig) -> int:
        return sum(a.nbytes for a in ModelState(name, model).state().values())

    total = sum(model_bytes(name, model) for name, model in config.models.items())
    ks = [len(model.classes) for model in config.models.values()]
    if config.default_model is not None:
        admitted = max(0, config.max_models - len(config.models))
        total += admitted * model_bytes("default", config.default_model)
        ks.append(len(config.default_model.classes))
    id_bytes = 6 * config.max_id_bytes + 3  # an id JSON-escaped at worst, quotes and comma
    per_entry = 3 * id_bytes + 8 * (max(ks, default=2) + 4)  # waiting, early, joined
    for source in config.labels:
        models = 1 if source.model is not None else config.max_models
        total += models * source.max_pending * per_entry
    return total + (1 << 20)


@dataclass(frozen=True, slots=True)
class SourceSnapshot:
    name: str
    lines: dict[str, int]  # status -> lines
    rejected: dict[str, int]  # reason -> lines
    skipped_files: dict[str, int]  # reason -> files the glob matched and we never read
    file_events: dict[str, int]  # event -> followed files it happened to


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
# Why a file matched by a source's glob is not read (tail.py decides; each file once;
# max_open_files: not yet, for want of a descriptor).
SKIP_REASONS = ("compressed", "not_regular", "pseudo", "symlink_outside", "max_open_files")
# What happened to followed files (tail.py tells): renamed away or deleted, cut, copied.
FILE_EVENTS = ("rotated", "truncated", "copied")


class SourceCounters:
    def __init__(self) -> None:
        self.lines = dict.fromkeys(STATUSES, 0)
        self.rejected = {reason.value: 0 for reason in Reason}
        self.skipped_files = dict.fromkeys(SKIP_REASONS, 0)
        self.file_events = dict.fromkeys(FILE_EVENTS, 0)

    def snapshot(self, name: str) -> SourceSnapshot:
        return SourceSnapshot(name, dict(self.lines), dict(self.rejected),
                              dict(self.skipped_files), dict(self.file_events))


class Aggregator:
    """All ingestion state: the models and per-source line counters.

    `ingest_predictions` takes a block of raw lines and returns the rejects so that
    the shell can log them; nothing here reads a clock or writes a file.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.models = Models(config)
        every: tuple[SourceConfig | LabelSourceConfig, ...] = (*config.sources, *config.labels)
        self.counters = {s.name: SourceCounters() for s in every}
        self.stores: dict[str, JoinStore] = {}
        self.decoders = _decoders(config)
        self.duplicates = {s.name: 0 for s in config.labels}
        self.recording = False  # join stores record their inputs for the journal
        self.advanced_to = -math.inf  # the latest `advance(now)`: when a snapshot is taken
        # Replay: the event time of the last line read per model (see `_within_skew`).
        self.last_read: dict[str, float] = {}
        # A label without a model waits in the store of every model it could label.
        self.by_id_alone = any(s.model is None for s in config.labels)

    def _store(self, model: ModelState) -> JoinStore | None:
        """The model's pending-label store, when a label source feeds this model."""
        store = self.stores.get(model.name)
        if store is None:
            source = next((s for s in self.config.labels if s.model == model.name), None) or next(
                (s for s in self.config.labels if s.model is None), None)
            if source is None:
                return None
            store = self.stores[model.name] = JoinStore(model.k, source.join_ttl_s,
                                                        source.max_pending,
                                                        self.config.max_id_bytes)
            if self.recording:
                store.record()
        return store

    @staticmethod
    def _transcode(source: SourceConfig | LabelSourceConfig, data: bytes, lines: int,
                   columns: formats.Columns, labels: bool) -> formats.Transcoded:
        """A model server's own format as canonical JSON Lines; JSON Lines as they are."""
        if source.format == "jsonl":
            return formats.Transcoded.unchanged(data, lines, source.fields)
        return formats.transcode(source.format, data, source.fields, source.timezone, labels,
                                 columns)

    def ingest_predictions(self, source: SourceConfig, data: bytes, lines: int, now: float,
                           arrival: float, columns: formats.Columns = formats.NO_COLUMNS
                           ) -> list[Reject]:
        """Parse and aggregate a block of `lines` complete lines; `arrival` stamps lines
        without a time. `columns`: what a BentoML source's schema file says."""
        cfg = self.config
        block = self._transcode(source, data, lines, columns, labels=False)
        parsed = block.restore(parse_predictions(
            block.data, block.lines, block.fields, source.model, self.models.known, arrival,
            cfg.sum_tolerance, self.decoders.get(source.name), max_skew_s=cfg.max_clock_skew_s,
            zone=source.timezone, max_id_bytes=cfg.max_id_bytes))
        self.models.admit_new(parsed)
        late = 0
        for name, batch in parsed.predictions.items():
            model = self.models[name]
            if now == -math.inf:  # replay: the clock is the newest event time
                batch = self._within_skew(model, batch, parsed.rejects)
                if not len(batch.ts):
                    continue
            seq = model.predictions_total + np.arange(len(batch.ts))
            late += int(model.ingest(batch, now).sum())
            store = self._store(model)
            if store is None:
                continue
            waiting = [(i, x) for i, (x, label) in enumerate(zip(batch.ids, batch.labels.tolist()))
                       if x is not None and label < 0]
            if waiting:
                index = np.asarray([i for i, _ in waiting])
                ids = [x for _, x in waiting]
                early = [x for x in ids if x in store.early] if self.by_id_alone else []
                model.add_labels(store.add_predictions(
                    ids, batch.ts[index], seq[index], batch.probs[index]))
                if early:  # labels without a model that also waited for other models
                    for other in self.stores.values():
                        if other is not store:
                            other.forget_early(early)
            store.expire(model.clock)
        parsed.rejects.sort(key=lambda reject: reject.index)
        self.count(self.counters[source.name], lines, parsed.rejects, late, parsed.blank)
        return parsed.rejects

    def _within_skew(self, model: ModelState, batch: Predictions, rejects: list[Reject]) -> Predictions:
        """Replay has no wall clock to hold event times to: a line more than
        max_clock_skew ahead of both the clock and the line of its model read just before
        it is a bad timestamp, unless the line after it (in the same block) is as close
        to it: that is a gap in the log, and the clock moves on. So a lone line stamped
        hours ahead never moves the clock."""
        skew = self.config.max_clock_skew_s
        ts = batch.ts
        before = self.last_read.get(model.name, -math.inf)
        self.last_read[model.name] = float(ts[-1])
        reference = np.maximum(np.concatenate(([before], ts[:-1])), model.clock)
        too_far = ts - reference > skew
        # The first line read has nothing before it to be ahead of (reference -inf).
        too_far[0] &= math.isfinite(reference[0])
        too_far[:-1] &= np.abs(ts[1:] - ts[:-1]) > skew
        if not too_far.any():
            return batch
        for row in np.flatnonzero(too_far):
            rejects.append(Reject(int(batch.index[row]), Reason.BAD_TIMESTAMP,
                                  ahead(float(ts[row]), float(reference[row]))))
        return batch.take(~too_far)

    def ingest_labels(self, source: LabelSourceConfig, data: bytes, lines: int, now: float,
                      arrival: float, columns: formats.Columns = formats.NO_COLUMNS) -> list[Reject]:
        """Join a block of label lines to waiting predictions (or keep them waiting)."""
        default = source.model
        if default is None and len(self.config.models) == 1:
            default = next(iter(self.config.models))
        cfg = self.config
        block = self._transcode(source, data, lines, columns, labels=True)
        parsed = block.restore(parse_labels(
            block.data, block.fields, default, self.models.known.restricted(source.model), arrival,
            max_skew_s=cfg.max_clock_skew_s, zone=source.timezone, max_id_bytes=cfg.max_id_bytes))
        self.models.admit_new(parsed)
        labels = parsed.labels
        assert labels is not None
        unowned = [i for i, m in enumerate(labels.model) if m is None]
        if unowned:
            self._join_by_id_alone(source, labels, unowned, parsed.rejects, now)
            parsed.rejects.sort(key=lambda reject: reject.index)
        for name in dict.fromkeys(m for m in labels.model if m is not None):
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

    def file_events(self, source_name: str, event: str, n: int) -> None:
        self.counters[source_name].file_events[event] += n

    def _join_by_id_alone(self, source: LabelSourceConfig, labels: Labels, rows: list[int],
                          rejects: list[Reject], now: float) -> None:
        """Labels without a model (DESIGN.md, "Labels without a model"): each joins the
        prediction of whichever model carries its id. One that comes first waits in the
        store of every model whose classes it names (`forget_early` drops the other
        copies once one joins); a label naming no model's class is an unknown class."""
        models = list(self.models)
        # A label source without a model feeds every model: each has a store.
        stores = {m.name: store for m in models if (store := self._store(m)) is not None}
        taken: dict[str, tuple[list[str], list[int], list[float]]] = {}
        seen: set[str] = set()
        for i in rows:
            request_id, raw, ts = labels.ids[i], labels.raw[i], float(labels.ts[i])
            owner = next((m for m in models if request_id in stores[m.name].waiting), None)
            if request_id in seen or (owner is None and any(
                    request_id in s.joined or request_id in s.early for s in stores.values())):
                self.duplicates[source.name] += 1
                continue
            targets = []
            for m in [owner] if owner is not None else models:
                try:
                    targets.append((m.name, class_index(raw, m.config.classes)))
                except ValueError:
                    continue
            if not targets:
                rejects.append(Reject(int(labels.index[i]), Reason.UNKNOWN_CLASS))
                continue
            seen.add(request_id)
            for name, label in targets:
                ids, classes, stamps = taken.setdefault(name, ([], [], []))
                ids.append(request_id)
                classes.append(label)
                stamps.append(ts)
        for name, (ids, classes, stamps) in taken.items():
            model, store = self.models[name], stores[name]
            model.add_labels(store.add_labels(ids, np.asarray(classes, dtype=np.int64),
                                              np.asarray(stamps, dtype=np.float64)))
            model.advance(now)
            store.expire(model.clock)

    def reject_too_long(self, source_name: str) -> None:
        self.count(self.counters[source_name], 1, [Reject(0, Reason.TOO_LONG)], 0, 0)

    @staticmethod
    def count(counters: SourceCounters, n: int, rejects: list[Reject], late: int, blank: int) -> None:
        for reject in rejects:
            counters.rejected[reject.reason.value] += 1
        counters.lines["rejected"] += len(rejects)
        counters.lines["late"] += late
        counters.lines["ok"] += n - len(rejects) - late - blank

    def advance(self, now: float) -> Aggregator:
        """Move every model's clock to `now` (see ModelState.advance) and drop what has
        waited for a join past its ttl: the step before `snapshot`, so that idle windows
        move with the wall clock. Returns self."""
        for model in self.models:
            model.advance(now)
            store = self.stores.get(model.name)
            if store is not None:
                store.expire(model.clock)
        self.advanced_to = now
        return self

    def snapshot(self) -> Snapshot:
        """Every exported value as the clocks stand (see `advance`); changes nothing."""
        return Snapshot(
            models=tuple(m.snapshot() for m in self.models),
            sources=tuple(c.snapshot(name) for name, c in self.counters.items()),
            joins=tuple(self._join_snapshot(m) for m in self.models),
            duplicates=dict(self.duplicates),
            taken_at=self.advanced_to,
        )

    def _join_snapshot(self, model: ModelState) -> JoinSnapshot:
        store = self.stores.get(model.name)
        if store is None:
            return JoinSnapshot(model.name, 0, 0, 0)
        return JoinSnapshot(model.name, store.pending, store.joins, store.expired)

    def state(self, stores: bool = True) -> tuple[dict[str, Any], dict[str, Array]]:
        """JSON-able metadata and named arrays that restore this aggregator exactly;
        without `stores`, the join stores are left out (the journal records their
        inputs instead, see `take_join_ops`)."""
        meta: dict[str, Any] = {"models": [], "sources": {}, "duplicates": self.duplicates}
        arrays: dict[str, Array] = {}
        for i, model in enumerate(self.models):
            meta["models"].append({"name": model.name, "classes": list(model.config.classes),
                                   "reference": repr(model.config.reference)})
            arrays.update({f"m{i}.{key}": v for key, v in model.state().items()})
        for name, c in self.counters.items():
            meta["sources"][name] = {"lines": c.lines, "rejected": c.rejected,
                                     "skipped_files": c.skipped_files,
                                     "file_events": c.file_events}
        if stores:
            meta["stores"], join_arrays = self.join_state()
            arrays.update(join_arrays)
        return meta, arrays

    def join_state(self) -> tuple[list[dict[str, Any]], dict[str, Array]]:
        """The join stores' part of `state()`: their entries and arrays."""
        entries, arrays = [], {}
        for n, (name, store) in enumerate(self.stores.items()):
            store_meta, store_arrays = store.state()
            entries.append({"model": name, "join": store_meta})
            arrays.update({f"j{n}.{key}": v for key, v in store_arrays.items()})
        return entries, arrays

    def restore(self, meta: Mapping[str, Any], arrays: Mapping[str, Array]) -> list[str]:
        """Load `state()` output; returns the names of models whose state was dropped
        because their classes changed (or no longer fit under max_models). Every part is
        checked first: what does not fit is a CheckpointError."""
        meta = schema.mapping(meta, "aggregator")
        dropped = []
        models = schema.items(schema.field(meta, "models", "aggregator"), "aggregator.models")
        for i, entry in enumerate(models):
            where = f"aggregator.models[{i}]"
            entry = schema.mapping(entry, where)
            name = schema.text(schema.field(entry, "name", where), f"{where}.name")
            classes = tuple(schema.text(c, f"{where}.classes") for c in
                            schema.items(schema.field(entry, "classes", where), f"{where}.classes"))
            reference = schema.text(schema.field(entry, "reference", where), f"{where}.reference")
            if self.models.known.classes(name) != classes or self.models.admit(name) is not None:
                dropped.append(name)
                continue
            model = self.models[name]
            model.restore(_prefixed(arrays, f"m{i}."),
                          same_reference=reference == repr(model.config.reference))
        for n, entry in enumerate(schema.items(meta.get("stores", []), "aggregator.stores")):
            where = f"aggregator.stores[{n}]"
            entry = schema.mapping(entry, where)
            name = schema.text(schema.field(entry, "model", where), f"{where}.model")
            if name in dropped or name not in self.models.states:
                continue
            store = self._store(self.models[name])
            if store is not None:
                store.restore(schema.field(entry, "join", where), _prefixed(arrays, f"j{n}."))
        duplicates = schema.counts(schema.field(meta, "duplicates", "aggregator"),
                                   "aggregator.duplicates")
        for name, count in duplicates.items():
            if name in self.duplicates:
                self.duplicates[name] = count
        sources = schema.mapping(schema.field(meta, "sources", "aggregator"), "aggregator.sources")
        for name, saved in sources.items():
            where = f"aggregator.sources.{name}"
            saved = schema.mapping(saved, where)
            lines = schema.counts(schema.field(saved, "lines", where), f"{where}.lines")
            rejected = schema.counts(schema.field(saved, "rejected", where), f"{where}.rejected")
            # (absent in checkpoints of v0.1)
            skipped = schema.counts(saved.get("skipped_files", {}), f"{where}.skipped_files")
            events = schema.counts(saved.get("file_events", {}), f"{where}.file_events")
            counters = self.counters.get(name)
            if counters is not None:
                # Only the statuses, reasons and events this version knows: label values
                # on /metrics never come from a file.
                for known, saved_counts in ((counters.lines, lines),
                                            (counters.rejected, rejected),
                                            (counters.skipped_files, skipped),
                                            (counters.file_events, events)):
                    known.update((k, v) for k, v in saved_counts.items() if k in known)
        return dropped

    # -- journal -----------------------------------------------------------------------

    def record_joins(self) -> None:
        """From now on, every join store records its inputs (dropping any not taken)."""
        self.recording = True
        for store in self.stores.values():
            store.record()

    def stop_recording(self) -> None:
        """Stop recording (a full state comes next: what was recorded is not needed)."""
        self.recording = False
        for store in self.stores.values():
            store.stop_recording()

    def take_join_ops(self) -> list[tuple[str, float, int, list[Op]]]:
        """Per join store with new inputs: (model, ttl_s, max_pending, inputs)."""
        out = []
        for name, store in self.stores.items():
            ops = store.take_ops()
            if ops:
                out.append((name, store.ttl_s, store.max_pending, ops))
        return out

    def replay_joins(self, entries: list[tuple[str, float, int, list[Op]]],
                     dropped: list[str]) -> None:
        """Apply inputs taken by `take_join_ops` again, in order, with the ttl and bound
        they were applied with (then this config's), after `restore`."""
        for name, ttl_s, max_pending, ops in entries:
            model = self.models.states.get(name)
            store = self._store(model) if model is not None and name not in dropped else None
            if store is None:
                continue
            config = store.ttl_s, store.max_pending
            store.ttl_s, store.max_pending = ttl_s, max_pending
            store.replay(ops)
            store.ttl_s, store.max_pending = config

    def reconfigure(self, config: Config) -> tuple[Aggregator, list[str]]:
        """The aggregator for a reloaded config: it restores this one's state, as a
        restart would, so every model whose classes are unchanged keeps its state.
        Also returns the models whose state was dropped."""
        fresh = Aggregator(config)
        meta, arrays = self.state()
        return fresh, fresh.restore(meta, arrays)
