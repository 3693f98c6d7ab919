"""`drift-monitor replay`: read every source from its start, as a daemon would, and show
the values at the end (a table or JSON) or at every multiple of a step (JSON Lines or an
OpenMetrics text for `promtool tsdb create-blocks-from openmetrics`).

With a step, the sources are read merged in event-time order, and before the first line
stamped after a step T the values are taken as a daemon would show them at wall time T
(its window clock at T). A line older than a step already shown is applied when it is
read, as a live daemon applies it: it lands where it belongs or counts as late.
"""

from __future__ import annotations

import heapq
import json
import math
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TextIO

from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from monitor.core.aggregate import Aggregator, ModelSnapshot, Snapshot
from monitor.core.parse import Reason, decode, lookup, parse_timestamp
from monitor.core.settings import Config, FieldPath, LabelSourceConfig, SourceConfig
from monitor.shell.daemon import Reader
from monitor.shell.export import replay_families, samples
from monitor.shell.stream import Block

Source = SourceConfig | LabelSourceConfig
BATCH_LINES = 4096  # lines handed to the aggregator at once between two steps


class Progress:
    """Bytes done of total, lines/s and ETA on one rewritten stderr line, at most 2/s."""

    def __init__(self, monotonic: Callable[[], float], out: TextIO) -> None:
        self.monotonic = monotonic
        self.out = out
        self.started = monotonic()
        self.last = -math.inf

    def show(self, done: int, total: int, lines: int) -> None:
        now = self.monotonic()
        if now - self.last < 0.5:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        eta = (total - done) / max(done / elapsed, 1.0)
        self.out.write(f"\rreplay {done / 2**20:,.1f} of {total / 2**20:,.1f} MiB  "
                       f"{lines / elapsed:,.0f} lines/s  eta {eta:,.0f}s ")
        self.out.flush()

    def close(self) -> None:
        self.out.write("\n")


def _lines_read(aggregator: Aggregator) -> int:
    return sum(sum(c.lines.values()) for c in aggregator.counters.values())


def replay_to_end(config: Config, arrival: float, progress: Progress | None = None) -> Snapshot:
    """Read every source once, source after source; the values at the end of the input.
    The window clock is the newest event time read; `arrival` stamps lines without one."""
    aggregator = Aggregator(config)
    reader = Reader(config, aggregator, from_start=True)
    done = 0
    try:
        while step := reader.step(now=-math.inf, arrival=arrival):
            done += step.read
            if progress is not None:
                progress.show(done, done + reader.backlog_bytes(), _lines_read(aggregator))
        reader.warn_unmatched()
    finally:
        reader.close()
    return aggregator.advance(-math.inf).snapshot()


@dataclass(slots=True)
class _Line:
    """One line (or one over-long line's marker) of a source, with the time it sorts at."""

    key: float
    order: int  # the source's position: ties between sources keep config order
    source: Source
    path: str
    line_no: int
    data: bytes  # with its newline; empty for an over-long line
    too_long: bool


def line_time(line: bytes, path: FieldPath) -> float | None:
    """The event time of a line, None when it has none the parser would accept."""
    obj = decode(line)
    if isinstance(obj, Reason):
        return None
    try:
        return parse_timestamp(lookup(obj, path))
    except (ValueError, OverflowError):
        return None


def _source_lines(reader: Reader, order: int, source: Source, budget: int) -> Iterator[_Line]:
    """Every line of one source in file order. A line without a usable time sorts with
    the line before it, so it is applied in its place (and rejected there if bad)."""
    tailer = reader.tailers[source.name]
    key = -math.inf
    path = source.fields.timestamp
    while True:
        before = (tailer.progress, tailer.changes)
        blocks: list[Block] = list(tailer.poll(budget))
        if not blocks and (tailer.progress, tailer.changes) == before:
            return  # nothing read, no file opened or closed: the source is read to its end
        for block in blocks:
            if block.too_long:
                yield _Line(key, order, source, block.path, block.first_line, b"", True)
                continue
            for i, line in enumerate(block.data.splitlines(keepends=True)):
                ts = line_time(line, path)
                if ts is not None:
                    key = ts
                yield _Line(key, order, source, block.path, block.first_line + i, line, False)


class _Batch:
    """Consecutive lines of one file, handed to the aggregator as one block."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.lines: list[_Line] = []

    def add(self, line: _Line, now: float, arrival: float) -> None:
        if self.lines and (line.too_long or self.lines[-1].path != line.path
                           or self.lines[-1].source is not line.source
                           or len(self.lines) >= BATCH_LINES):
            self.flush(now, arrival)
        if line.too_long:
            self.reader.ingest(line.source, Block(line.path, line.line_no, b"", 1, True), now,
                               arrival)
        else:
            self.lines.append(line)

    def flush(self, now: float, arrival: float) -> None:
        if not self.lines:
            return
        first = self.lines[0]
        block = Block(first.path, first.line_no, b"".join(x.data for x in self.lines),
                      len(self.lines))
        self.lines = []
        self.reader.ingest(first.source, block, now, arrival)


def first_step(t: float, step_s: float) -> float:
    """The first multiple of step_s at or after t."""
    return math.ceil(t / step_s) * step_s


def replay_steps(config: Config, step_s: float, arrival: float,
                 budget: int = 8 << 20) -> Iterator[tuple[float, Snapshot]]:
    """(T, the values at wall time T) for every multiple T of step_s from the first at or
    after the first event to the first at or after the last event."""
    aggregator = Aggregator(config)
    reader = Reader(config, aggregator, from_start=True)
    sources: list[Source] = [*config.sources, *config.labels]
    merged = heapq.merge(*(_source_lines(reader, i, s, budget) for i, s in enumerate(sources)),
                         key=lambda line: (line.key, line.order))
    batch = _Batch(reader)
    shown = -math.inf  # the last step shown: a live daemon's clock is past it
    next_step: float | None = None
    newest = -math.inf
    try:
        for line in merged:
            if math.isfinite(line.key):
                if next_step is None:
                    next_step = first_step(line.key, step_s)
                newest = max(newest, line.key)
                while line.key > next_step:
                    batch.flush(shown, arrival)
                    yield next_step, aggregator.advance(next_step).snapshot()
                    shown, next_step = next_step, next_step + step_s
            batch.add(line, shown, arrival)
        batch.flush(shown, arrival)
        reader.warn_unmatched()
        if next_step is not None:
            last = first_step(newest, step_s)
            while next_step <= last:
                yield next_step, aggregator.advance(next_step).snapshot()
                next_step += step_s
    finally:
        reader.close()


# -- output ------------------------------------------------------------------------------


def _number(t: float) -> float | int:
    return int(t) if float(t).is_integer() else t


def write_json_lines(steps: Iterable[tuple[float, Snapshot]], out: TextIO) -> None:
    for t, snapshot in steps:
        out.write(json.dumps({"ts": _number(t), "metrics": samples(snapshot)}))
        out.write("\n")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@dataclass(slots=True)
class _Family:
    kind: str
    documentation: str
    # sample name and label text -> (timestamps, values)
    series: dict[tuple[str, str], tuple[array, array]]


class OpenMetricsBook:
    """The samples of every step, grouped by family and series as OpenMetrics wants them
    (a family's samples together, each series in time order), kept as packed doubles."""

    def __init__(self, instance: str) -> None:
        self.target = f'job="drift-monitor",instance="{_escape(instance)}"'
        self.families: dict[str, _Family] = {}
        # (sample name, label pairs) -> its (timestamps, values), so that each step only
        # looks its series up instead of formatting its labels again
        self.known: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[array, array]] = {}

    def add(self, t: float, families: Iterable[Metric]) -> None:
        for metric in families:
            family = self.families.get(metric.name)
            if family is None:
                family = self.families[metric.name] = _Family(metric.type, metric.documentation,
                                                              {})
            for s in metric.samples:
                pairs = tuple(s.labels.items())
                series = self.known.get((s.name, pairs))
                if series is None:
                    labels = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
                    key = (s.name, f"{labels},{self.target}" if labels else self.target)
                    series = self.known[(s.name, pairs)] = family.series[key] = (array("d"),
                                                                                array("d"))
                series[0].append(t)
                series[1].append(s.value)

    def write(self, out: TextIO) -> None:
        for name, family in self.families.items():
            if not family.series:
                continue
            out.write(f"# TYPE {name} {family.kind}\n# HELP {name} {_escape(family.documentation)}\n")
            for (sample, labels), (stamps, values) in family.series.items():
                head = f"{sample}{{{labels}}} "
                out.writelines(f"{head}{floatToGoString(v)} {_number(t)!r}\n"
                               for t, v in zip(stamps, values))
        out.write("# EOF\n")


def write_openmetrics(steps: Iterable[tuple[float, Snapshot]], instance: str, out: TextIO) -> None:
    book = OpenMetricsBook(instance)
    for t, snapshot in steps:
        book.add(t, replay_families(snapshot))
    book.write(out)


def _cell(value: float, digits: int = 6) -> str:
    """A value as the table shows it: '-' when not exported, never '-0.000000'."""
    if not math.isfinite(value):
        return "-"
    return f"{round(value, digits) + 0.0:.{digits}f}"


TABLE_HEAD = ("model", "window", "preds", "labels", "kl", "cross_ent", "js", "pred_kl", "log_loss")


def format_table(models: tuple[ModelSnapshot, ...], min_samples: Mapping[str, int]) -> str:
    """Per model and window: counts and divergences, '-' where a value is not exported,
    with a note per model saying why."""
    rows: list[tuple[str, ...]] = [TABLE_HEAD]
    dashes = []
    for m in models:
        for i, window in enumerate(m.windows):
            values = (m.kl_divergence[i], m.cross_entropy[i], m.js_divergence[i],
                      m.prediction_kl_divergence[i], m.log_loss[i])
            if not all(math.isfinite(v) for v in values) and m.name not in dashes:
                dashes.append(m.name)
            rows.append((m.name, window, f"{m.window_predictions[i]:.0f}",
                         f"{m.window_labels[i]:.0f}", *(_cell(v) for v in values)))
    widths = [max(len(r[c]) for r in rows) for c in range(len(TABLE_HEAD))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    refs = [f"{m.name}: reference entropy {_cell(m.reference_entropy)} nats over "
            f"{m.reference_labels:.0f} labels" for m in models]
    notes = [f"{name}: '-' is a value not exported: its window holds fewer than min_samples="
             f"{min_samples[name]} predictions (labelled ones, for values computed from labels), "
             "or the reference has no labels yet" for name in dashes if name in min_samples]
    return "\n".join([*lines, "", *refs, *notes]) + "\n"


def format_summary(snapshot: Snapshot) -> str:
    """Lines read per source and status, rejections per reason (the non-zero ones)."""
    out = []
    for s in snapshot.sources:
        statuses = " ".join(f"{status}={n}" for status, n in s.lines.items())
        reasons = " ".join(f"{reason}={n}" for reason, n in s.rejected.items() if n)
        out.append(f"source {s.name}: {statuses}" + (f" (rejected: {reasons})" if reasons else ""))
    return "\n".join(out) + "\n"


def min_samples_of(config: Config, snapshot: Snapshot) -> dict[str, int]:
    """min_samples per model shown, models admitted through the default template too."""
    out = {name: model.min_samples for name, model in config.models.items()}
    if config.default_model is not None:
        for m in snapshot.models:
            out.setdefault(m.name, config.default_model.min_samples)
    return out


def run_replay(config: Config, *, json_out: bool, openmetrics: bool, step_s: float | None,
               instance: str, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """The replay command: what it prints on `out`, the line summary on `err`."""
    arrival = time.time()
    if step_s is None:
        progress = Progress(time.monotonic, err) if err.isatty() else None
        snapshot = replay_to_end(config, arrival, progress)
        if progress is not None:
            progress.close()
        if json_out:
            json.dump({"metrics": samples(snapshot)}, out, indent=1)
            out.write("\n")
        else:
            out.write(format_table(snapshot.models, min_samples_of(config, snapshot)))
            err.write(format_summary(snapshot))
        return 0
    steps = replay_steps(config, step_s, arrival)
    if openmetrics:
        write_openmetrics(steps, instance, out)
    else:
        write_json_lines(steps, out)
    return 0
