"""The long-running loop: startup, main_loop, shutdown (uvicorn's three phases).

The main thread owns every piece of mutable state. Watchdog callbacks and signal
handlers only `put()` a message on one `queue.SimpleQueue` (its put is reentrant;
`Queue` and `Event` take locks a signal handler can deadlock on, bpo-14976). The HTTP
thread only reads `self.snapshot`, an immutable Snapshot replaced whole right after a
checkpoint is durable: /metrics is never ahead of what survives `kill -9`, so counters
never go backwards across a crash.
"""

from __future__ import annotations

import errno
import gc
import logging
import math
import os
import queue
import resource
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, fields, replace
from typing import Any

from monitor.core import schema
from monitor.core.aggregate import Aggregator, Snapshot, state_budget
from monitor.core.errors import CheckpointError, ConfigError, ConfigErrors, StateError
from monitor.core.formats import NO_COLUMNS
from monitor.core.settings import Config, LabelSourceConfig, SourceConfig
from monitor.shell import checkpoint
from monitor.shell.config import load_config
from monitor.shell.export import Exposition
from monitor.shell.http import MetricsServer, load_web
from monitor.shell.schemas import Schemas
from monitor.shell.spool import Ingest
from monitor.shell.stream import Block, FileRecord
from monitor.shell.tail import Descriptors, Tailer, descriptor_budget, glob_root

log = logging.getLogger(__name__)

READ_BUDGET = 8 << 20  # bytes per sweep over the sources, between checks for signals
CATCH_UP_BYTES = 64 << 20  # a backlog above this at start-up gets progress lines
MAX_BACKOFF_S = 60.0
UNMATCHED_EVERY_S = 300.0  # how often a source whose glob matches no file is logged again
WAKE, RELOAD, STOP = "wake", "reload", "stop"


class Throttle:
    """Lets one message per key through every `interval_s`, counting the rest."""

    def __init__(self, interval_s: float, monotonic: Callable[[], float]) -> None:
        self.interval_s = interval_s
        self.monotonic = monotonic
        self.last: dict[object, float] = {}
        self.suppressed: Counter[object] = Counter()

    def allow(self, key: object) -> int | None:
        """None to stay quiet, else how many messages were suppressed since the last."""
        now = self.monotonic()
        if now - self.last.get(key, -math.inf) < self.interval_s:
            self.suppressed[key] += 1
            return None
        self.last[key] = now
        return self.suppressed.pop(key, 0)


class CatchUp:
    """Logs progress while a daemon that started far behind reads its backlog."""

    def __init__(self, backlog: int, monotonic: Callable[[], float], every_s: float = 5.0) -> None:
        self.backlog = backlog
        self.monotonic = monotonic
        self.every_s = every_s
        self.started = self.last = monotonic()
        self.done = 0
        log.info("catching up backlog=%.1fMiB", backlog / 2**20)

    def progress(self, read: int, changed: bool = False) -> bool:
        """Count `read` bytes; True once caught up (a sweep that found nothing: no byte
        read and, `changed` False, no file opened, closed or cut either)."""
        self.done += read
        now = self.monotonic()
        elapsed = max(now - self.started, 1e-9)
        if read == 0 and not changed:
            log.info("caught up read=%.1fMiB in %.1fs", self.done / 2**20, elapsed)
            return True
        if now - self.last >= self.every_s:
            self.last = now
            rate = self.done / elapsed
            log.info("catching up done=%.1fMiB of %.1fMiB rate=%.1fMiB/s eta=%.0fs",
                     self.done / 2**20, self.backlog / 2**20, rate / 2**20,
                     max(self.backlog - self.done, 0) / max(rate, 1.0))
        return False


@dataclass(frozen=True, slots=True)
class Step:
    """What one sweep over the sources did."""

    read: int  # bytes consumed
    changes: int  # changes of the files followed: opened, closed, cut, skipped, handed over

    def __bool__(self) -> bool:
        """Whether anything happened: something new to checkpoint, and maybe more to read."""
        return self.read > 0 or self.changes > 0


class Reader:
    """Tails every source and feeds the aggregator; shared by `run` and `replay`
    (which reads every file `from_start`, whatever `start_at` says)."""

    def __init__(
        self,
        config: Config,
        aggregator: Aggregator,
        tail_state: dict | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        tailers: dict[str, Tailer] | None = None,
        from_start: bool = False,
    ) -> None:
        self.config = config
        self.aggregator = aggregator
        self.throttle = Throttle(10.0, monotonic)
        self.unmatched = Throttle(UNMATCHED_EVERY_S, monotonic)
        self.schemas = Schemas()
        self.sources: list[SourceConfig | LabelSourceConfig] = [*config.sources, *config.labels]
        state = tail_state or {}
        reuse = tailers or {}
        self.tailers: dict[str, Tailer] = {}
        # One descriptor budget over every source, kept across reloads.
        self.descriptors = next((t.descriptors for t in reuse.values()), None) or Descriptors(0)
        self.descriptors.limit = descriptor_budget(config.max_open_files)
        if self.descriptors.limit < config.max_open_files:
            log.warning("max_open_files=%d lowered to %d: the process may open %d (ulimit -n, "
                        "LimitNOFILE)", config.max_open_files, self.descriptors.limit,
                        resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        for source in self.sources:
            old = reuse.get(source.name)
            if old is not None and old.pattern == source.path:
                self.tailers[source.name] = old
                continue
            saved: dict[str, Any] = state.get(source.name) or next(
                (v for v in state.values() if v.get("path") == source.path), {})
            self.tailers[source.name] = Tailer(
                source.path,
                config.max_line_bytes,
                start_at_end=source.start_at == "end" and not from_start,
                records=[FileRecord(**r) for r in saved.get("files", [])],
                history=saved.get("history"),
                monotonic=monotonic,
                skipped=saved.get("skipped"),
                follow_symlinks=source.follow_symlinks,
                descriptors=self.descriptors,
            )
        for name, old in reuse.items():
            if self.tailers.get(name) is not old:
                old.close()

    def step(self, now: float, arrival: float | None = None, budget: int = READ_BUDGET) -> Step:
        """One sweep: read up to `budget` bytes per source; returns the bytes consumed
        and the changes of the files followed (false when neither: nothing new to
        checkpoint).

        `now` is the window clock (wall time; -inf in replay, where the clock is the
        newest event), `arrival` stamps lines that carry no time (default `now`).
        """
        stamp = now if arrival is None else arrival
        read = changes = 0
        for source in self.sources:
            tailer = self.tailers[source.name]
            before, changed_before = tailer.progress, tailer.changes
            for block in tailer.poll(budget):
                self.ingest(source, block, now, stamp)
            for reason, n in tailer.take_skips().items():
                self.aggregator.skip_files(source.name, reason, n)
            for event, n in tailer.take_events().items():
                self.aggregator.file_events(source.name, event, n)
            read += tailer.progress - before
            changes += tailer.changes - changed_before
        return Step(read, changes)

    def ingest(self, source: SourceConfig | LabelSourceConfig, block: Block, now: float,
               arrival: float) -> None:
        if block.too_long:
            self.aggregator.reject_too_long(source.name)
            self._log_reject(source.name, block.path, block.first_line, "too_long")
            return
        columns = self.schemas.columns(block.path) if source.format == "bentoml" else NO_COLUMNS
        if isinstance(source, LabelSourceConfig):
            rejects = self.aggregator.ingest_labels(source, block.data, block.lines, now, arrival,
                                                    columns)
        else:
            rejects = self.aggregator.ingest_predictions(source, block.data, block.lines, now,
                                                         arrival, columns)
        for reject in rejects:
            self._log_reject(source.name, block.path, block.first_line + reject.index,
                             reject.reason.value, reject.detail)

    def _log_reject(self, source: str, path: str, line_no: int, reason: str, detail: str = "") -> None:
        suppressed = self.throttle.allow((source, reason))
        if suppressed is not None:
            log.warning("line rejected source=%s file=%s line=%d reason=%s suppressed=%d%s",
                        source, path, line_no, reason, suppressed, f" ({detail})" if detail else "")

    def files_followed(self) -> dict[str, int]:
        """Files each source follows now (open, or fully read and closed), by name."""
        return {name: len(t.files) + len(t.dormant) for name, t in self.tailers.items()}

    def warn_unmatched(self) -> None:
        """Log each source that follows no file, again every UNMATCHED_EVERY_S while
        it stays so: a wrong glob otherwise only shows as zeros."""
        followed = self.files_followed()
        for source in self.sources:
            if followed[source.name] == 0 and self.unmatched.allow(source.name) is not None:
                log.warning("no file matches source=%s path=%s", source.name, source.path)

    def state(self) -> dict:
        return {
            name: {"path": t.pattern, "files": [asdict(r) for r in t.records()],
                   "history": dict(t.history), "skipped": t.skipped_state()}
            for name, t in self.tailers.items()
        }

    def scan(self) -> None:
        """Find every file (and where to start in it) without reading yet."""
        for tailer in self.tailers.values():
            tailer.scan()

    def backlog_bytes(self) -> int:
        return sum(t.backlog_bytes() for t in self.tailers.values())

    def close(self) -> None:
        for tailer in self.tailers.values():
            tailer.close()


def take_messages(messages: queue.SimpleQueue[str], timeout: float) -> list[str]:
    """Wait up to `timeout` for a message, then take every message already queued."""
    out = []
    try:
        out.append(messages.get(timeout=timeout) if timeout > 0 else messages.get_nowait())
        while True:
            out.append(messages.get_nowait())
    except queue.Empty:
        pass
    return out


class Daemon:
    def __init__(
        self,
        config: Config,
        config_path: str | None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        listen: tuple[str, int] | None = None,
        wait: Callable[[queue.SimpleQueue[str], float], list[str]] = take_messages,
    ) -> None:
        """`clock` is the window clock, `monotonic` times intervals, and `wait(messages,
        timeout)` blocks for the loop's next messages: tests pass fakes of all three."""
        if config.state_dir is None:
            raise ConfigErrors([ConfigError("state_dir", "required for `run`")])
        self.path = os.path.join(config.state_dir, checkpoint.FILENAME)
        # `run --web.listen-address` wins over the config's `listen`, on reload too.
        self.listen = listen
        self.config = config = self._listening(config)
        self.config_path = config_path
        self.clock = clock
        self.monotonic = monotonic
        self.wait = wait
        self.messages: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.snapshot: Snapshot | None = None
        self.stopping = False
        self.dirty = True
        self.failures = 0
        self.last_durable = monotonic()
        self.last_tick = monotonic()
        self.next_checkpoint = 0.0
        self.next_poll = 0.0
        self.source_files: dict[str, int] = {}  # replaced whole; the HTTP thread reads it
        self.exposition = Exposition(
            lambda: self.snapshot,
            lambda: self.monotonic() - self.last_durable,
            lambda: self.failures,
            lambda: self.source_files,
        )
        self.aggregator = Aggregator(config)
        # Restart replays the join inputs since the snapshot: at most a few stores' worth.
        capacity = max((s.max_pending for s in config.labels), default=0)
        assert config.state_dir is not None  # `run` requires it (config checks)
        self.journal = checkpoint.Journal(config.state_dir, state_budget(config),
                                          checkpoint.COMPACT_RATIO * max(capacity, 100_000))
        self.reader: Reader | None = None
        self.catch_up: CatchUp | None = None
        self.server: MetricsServer | None = None
        self.observer: object | None = None
        self.ingest: Ingest | None = None

    # -- phases ------------------------------------------------------------------------

    def run(self) -> int:
        with self.capture_signals():
            self.startup()
            clean = False
            try:
                self.main_loop()
                clean = True
            finally:
                self.shutdown(clean)
        return 0

    def startup(self) -> None:
        assert self.config.state_dir is not None
        # A bad web config is a config error (exit 2), found before any state is touched.
        web = None if self.config.web_config_file is None else load_web(self.config.web_config_file)
        try:
            checkpoint.make_state_dir(self.config.state_dir)
        except OSError as exc:
            raise StateError(f"state_dir {self.config.state_dir}: {exc.strerror}") from None
        if not os.path.isdir(self.config.state_dir):  # mkdir says "File exists" for a file
            raise StateError(f"state_dir {self.config.state_dir}: not a directory")
        try:  # before the first scan: each spool's newest segment is already there
            self.ingest = Ingest(self.config, self.clock)
        except OSError as exc:
            raise StateError(f"spool in {self.config.state_dir}: {exc.strerror}") from None
        self.restore()
        assert self.reader is not None
        # Where each file starts (start_at: end) is fixed before we report ready.
        self.reader.scan()
        self.reader.warn_unmatched()
        try:
            self._write_checkpoint()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise StateError(f"out of file descriptors ({exc.strerror}) writing the "
                                 f"checkpoint: raise the limit (ulimit -n, LimitNOFILE) or "
                                 f"lower max_open_files") from None
            raise StateError(
                f"state_dir {self.config.state_dir} is not writable: {exc.strerror}") from None
        try:
            self.server = MetricsServer(self.config.listen_host, self.config.listen_port,
                                        self.exposition.render, self._healthy,
                                        lambda: self.snapshot is not None,
                                        Throttle(60.0, self.monotonic), web,
                                        monotonic=self.monotonic, ingest=self.ingest)
        except OSError as exc:
            raise StateError(f"cannot listen on {self.config.listen_host}:"
                             f"{self.config.listen_port}: {exc.strerror}") from None
        # Serve only once start-up is done: nothing a client does can starve it then.
        self.observer = self._watch()
        self.server.start()
        backlog = self.reader.backlog_bytes()
        if backlog > CATCH_UP_BYTES:
            self.catch_up = CatchUp(backlog, self.monotonic)
        # Start-up objects live for good: keep the cyclic GC from re-scanning them.
        gc.freeze()
        log.info("started listen=%s://%s:%d/metrics sources=%d models=%d",
                 "https" if web is not None and web.context is not None else "http",
                 self.config.listen_host, self.server.port, len(self.reader.sources),
                 len(self.config.models))

    def main_loop(self) -> None:
        assert self.reader is not None
        while not self.stopping:
            self.handle(self.wait(self.messages, self.step()))

    def step(self) -> float:
        """One turn of the loop: poll the sources when due, checkpoint when due; returns
        how long to wait for a message before the next turn (0: more data may be waiting)."""
        assert self.reader is not None
        mono = self.monotonic()
        self.last_tick = mono
        busy = False
        if mono >= self.next_poll:
            step = self.reader.step(self.clock())
            busy = bool(step)
            self.reader.warn_unmatched()
            self.dirty = self.dirty or busy
            if self.catch_up is not None and self.catch_up.progress(step.read, step.changes > 0):
                self.catch_up = None
            # More data may be waiting: poll again at once instead of sleeping.
            self.next_poll = mono if busy else mono + self.config.poll_interval_s
        if mono >= self.next_checkpoint:
            self._checkpoint()
        return 0.0 if busy else max(0.0, min(self.next_poll, self.next_checkpoint) - mono)

    def handle(self, messages: list[str]) -> None:
        for message in messages:
            if message == WAKE:
                self.next_poll = 0.0
            elif message == RELOAD:
                self._reload()
            elif message == STOP:
                self.stopping = True

    def shutdown(self, clean: bool = True) -> None:
        """Stop watching, write the final checkpoint (only after a clean stop: after an
        unexpected error, a block may be half applied; the last checkpoint is right),
        close files, stop serving."""
        if self.observer is not None:
            self.observer.stop()  # type: ignore[attr-defined]
            self.observer.join(timeout=2)  # type: ignore[attr-defined]
        if self.reader is not None:
            if clean:
                try:
                    self._write_checkpoint()
                except OSError as exc:
                    log.error("final checkpoint failed path=%s error=%s", self.path, exc.strerror)
            self.reader.close()
        if self.server is not None:
            self.server.stop()
        if self.ingest is not None:
            self.ingest.close()
        log.info("stopped")

    # -- signals and messages ----------------------------------------------------------

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Handlers only enqueue; the old handlers come back on the way out."""
        wanted = {signal.SIGTERM: STOP, signal.SIGINT: STOP, signal.SIGHUP: RELOAD}
        previous = {
            sig: signal.signal(sig, lambda signum, frame: self.messages.put(
                wanted[signal.Signals(signum)]))
            for sig in wanted
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _healthy(self) -> bool:
        # The loop ticks at least every poll_interval; a stuck loop fails the probe.
        return self.monotonic() - self.last_tick < max(30.0, 10 * self.config.poll_interval_s)

    def _watch(self) -> object | None:
        """inotify wake-ups (watchdog) beside polling; polling alone when inotify fails."""
        if self.config.watch == "poll":
            return None
        from watchdog.events import (
            EVENT_TYPE_CLOSED_NO_WRITE,
            EVENT_TYPE_OPENED,
            FileSystemEvent,
            FileSystemEventHandler,
        )
        from watchdog.observers import Observer

        messages = self.messages

        class Wake(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                # An open or a close without writing changes nothing; and our own opens
                # (one per poll, of a FIFO, say) would wake us into a spin.
                if event.event_type not in (EVENT_TYPE_OPENED, EVENT_TYPE_CLOSED_NO_WRITE):
                    messages.put(WAKE)

        try:
            observer = Observer()  # its inotify descriptor and pipe: EMFILE here too
            for folder, recursive in sorted(_watch_roots(self.reader.sources)):  # type: ignore[union-attr]
                if os.path.isdir(folder):
                    observer.schedule(Wake(), folder, recursive=recursive)
            observer.start()
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EMFILE, errno.ENFILE):
                raise
            log.warning("inotify unavailable, polling only error=%s interval=%.1fs",
                        exc.strerror, self.config.poll_interval_s)
            return None
        return observer

    # -- checkpoints -------------------------------------------------------------------

    def restore(self) -> None:
        """Aggregates and file offsets from the snapshot and its journal, or a fresh start
        when there is none. Unusable state (damaged, or well-formed but not what this
        config can hold: a CheckpointError, and nothing else) is reported in one line and
        moved aside: never a crash loop, never silently ignored."""
        assert self.config.state_dir is not None
        try:
            saved = checkpoint.load(self.config.state_dir, self.journal.budget)
            if saved is not None:
                self._resume(saved)
        except OSError as exc:
            raise StateError(f"cannot read checkpoint {self.path}: {exc.strerror}") from None
        except CheckpointError as exc:
            moved = checkpoint.move_aside(self.config.state_dir, self.clock())
            log.error("checkpoint unreadable, starting fresh path=%s moved_to=%s error=%s",
                      self.path, ",".join(moved), exc)
            self.aggregator = Aggregator(self.config)
            self.reader = None
            self.failures = 0
        if self.reader is None:
            self.reader = Reader(self.config, self.aggregator, None, self.monotonic)

    def _resume(self, saved: checkpoint.Saved) -> None:
        meta = schema.mapping(saved.meta, "checkpoint")
        aggregator = schema.mapping(schema.field(meta, "aggregator", "checkpoint"),
                                    "checkpoint.aggregator")
        dropped = self.aggregator.restore({**aggregator, "stores": meta.get("stores", [])},
                                          saved.arrays)
        self.aggregator.replay_joins(saved.joins, dropped)
        tail = _tail_state(schema.field(meta, "tail", "checkpoint"))
        counters = schema.mapping(meta.get("daemon", {}), "checkpoint.daemon")
        self.failures = schema.count(counters.get("checkpoint_failures", 0),
                                     "checkpoint.daemon.checkpoint_failures")
        self.reader = Reader(self.config, self.aggregator, tail, self.monotonic)
        for name in dropped:
            log.warning("model state dropped on restore, its classes changed model=%s", name)
        if saved.upgraded is not None:
            log.warning("checkpoint of v0.1 upgraded: kept file offsets, counters and join "
                        "stores; started empty (v0.1 sums lack columns of this version): %s; "
                        "log_loss_sum_total starts at 0", "; ".join(saved.upgraded))
        log.info("checkpoint restored path=%s journal_records=%d%s", self.path, saved.records,
                 " torn_record_ignored=1" if saved.torn else "")

    def _write_checkpoint(self) -> None:
        """Offsets, aggregates and the daemon's own counters, durable as one unit: a
        journal record of what changed, or a full snapshot when one is due."""
        assert self.reader is not None
        meta = {"tail": self.reader.state(), "written_at": self.clock(),
                "daemon": {"checkpoint_failures": self.failures}}
        aggregator, arrays = self.aggregator.state(stores=False)
        meta["aggregator"] = aggregator
        if self.journal.wants_snapshot() or not self.journal.append(
                meta, arrays, self.aggregator.take_join_ops()):
            stores, store_arrays = self.aggregator.join_state()
            self.aggregator.record_joins()  # from here on, their inputs go to the journal
            self.journal.snapshot({**meta, "stores": stores}, arrays, store_arrays)
        self.last_durable = self.monotonic()
        self.dirty = False
        self._publish()
        if self.ingest is not None:
            reader = self.reader
            self.ingest.release(lambda name: reader.tailers[name].records())

    def write_checkpoint(self) -> float:
        """Make the state durable now, as the loop does when a checkpoint is due and
        anything changed, and return the seconds the loop would be held up (wall time,
        whatever clock the daemon runs on): what benchmarks time."""
        started = time.perf_counter()
        self._write_checkpoint()
        return time.perf_counter() - started

    def _checkpoint(self) -> None:
        """Write if anything changed, else only refresh the published snapshot (idle
        windows still move with the clock); back off while writes fail."""
        interval = self.config.checkpoint_interval_s
        try:
            if self.dirty:
                self._write_checkpoint()
            else:
                self.last_durable = self.monotonic()
                self._publish()
        except OSError as exc:
            self.failures += 1
            # The journal may end in a partial record now: the next write is a snapshot,
            # so the join stores need not keep their inputs meanwhile.
            self.aggregator.stop_recording()
            delay = min(interval * 2 ** min(self.failures, 16), MAX_BACKOFF_S)
            log.error("checkpoint failed path=%s error=%s failures=%d retry_in=%.1fs",
                      self.path, exc.strerror, self.failures, delay)
            self.next_checkpoint = self.monotonic() + delay
            return
        self.next_checkpoint = self.monotonic() + interval

    def _publish(self) -> None:
        assert self.reader is not None
        self.snapshot = self.aggregator.advance(self.clock()).snapshot()
        self.source_files = self.reader.files_followed()

    def _listening(self, config: Config) -> Config:
        if self.listen is None:
            return config
        return replace(config, listen_host=self.listen[0], listen_port=self.listen[1])

    def _reload(self) -> None:
        if self.config_path is None:
            return
        try:
            config = self._listening(load_config(self.config_path))
        except ConfigErrors as exc:
            for error in exc.errors:
                log.error("reload rejected, keeping the running config: %s", error)
            return
        if (config.listen_host, config.listen_port, config.state_dir) != (
                self.config.listen_host, self.config.listen_port, self.config.state_dir):
            log.warning("listen and state_dir changes need a restart; keeping the old ones")
            config = _replace_listen(config, self.config)
        if config.http_sources != self.config.http_sources:
            log.warning("http_sources changes need a restart; keeping the old ones")
            config = replace(config, http_sources=self.config.http_sources, sources=(
                *(s for s in config.sources if s.format != "kserve"),
                *(s for s in self.config.sources if s.format == "kserve")))
        assert self.reader is not None
        self.aggregator, dropped = self.aggregator.reconfigure(config)
        self.journal.broken = True  # a new aggregator: its stores record nothing yet
        for name in dropped:
            log.warning("model state dropped on reload, its classes changed model=%s", name)
        self.reader = Reader(config, self.aggregator, self.reader.state(), self.monotonic,
                             tailers=self.reader.tailers)
        self.config = config
        self.dirty = True
        self.next_checkpoint = 0.0
        log.info("config reloaded models=%d sources=%d", len(config.models), len(self.reader.sources))


def _replace_listen(config: Config, old: Config) -> Config:
    return replace(config, listen_host=old.listen_host, listen_port=old.listen_port,
                   state_dir=old.state_dir)


# What each FileRecord field may hold, by its annotation.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "str": (str,), "bool": (bool,), "str | None": (str, type(None)),
    "float": (int, float), "int | None": (int, type(None))}


def _tail_state(value: object) -> dict:
    """The tail section of a checkpoint, checked: per source its glob, the files it
    follows (FileRecord fields of the right types) and its fingerprint history."""
    out = {}
    for name, entry in schema.mapping(value, "tail").items():
        where = f"tail.{name}"
        entry = schema.mapping(entry, where)
        records = []
        for i, record in enumerate(schema.items(schema.field(entry, "files", where),
                                                f"{where}.files")):
            record = schema.mapping(record, f"{where}.files[{i}]")
            for f in fields(FileRecord):
                if f.name not in record:
                    if f.default is MISSING:
                        raise CheckpointError(f"{where}.files[{i}].{f.name}: missing")
                    continue
                types = _FIELD_TYPES.get(str(f.type))
                ok = types is None or (isinstance(record[f.name], types) and not (
                    isinstance(record[f.name], bool) and bool not in types))
                if not ok:
                    raise CheckpointError(f"{where}.files[{i}].{f.name}: expected {f.type}")
            if set(record) - {f.name for f in fields(FileRecord)}:
                raise CheckpointError(f"{where}.files[{i}]: unknown fields")
            records.append(record)
        history = schema.counts(entry.get("history", {}), f"{where}.history")
        if not all(key.split(":", 1)[0].isdigit() for key in history):
            raise CheckpointError(f"{where}.history: a key is not <bytes>:<digest>")
        out[name] = {"path": schema.text(schema.field(entry, "path", where), f"{where}.path"),
                     "files": records, "history": history}
    return out


def _watch_roots(sources: list[SourceConfig | LabelSourceConfig]) -> set[tuple[str, bool]]:
    """For each glob, its deepest folder without a wildcard, and whether the folders
    below it matter too (a wildcard in the folder part)."""
    return {glob_root(source.path) for source in sources}
