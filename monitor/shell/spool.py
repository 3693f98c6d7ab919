"""HTTP ingest: events POSTed by a model server are appended and fsync'd to a spool in
`state_dir` before they are answered, and read from there, exactly once, by the
ordinary tailing (the http source's spool is a prediction source; its offsets are in
the checkpoint with everything else). Shell: files and a lock, no parsing.

A spool is a folder of segments `<seq>.jsonl` (state_dir/spool/<name>/). Only the
newest is written; a new one is started when it passes a segment's size, and at every
start-up (a write cut by a full disk is truncated away, never continued); each starts
with a header line of its own (formats.SEGMENT), so no two look alike to the tailer,
which tells files apart by their first bytes. After a
durable checkpoint the main thread deletes each older segment that checkpoint has read
to its end. The bytes in segments not yet deleted are bounded by `max_spool_bytes`:
past it, 503 with Retry-After, at once; nothing waits, nothing grows without bound.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from monitor.core.formats import SEGMENT
from monitor.core.kserve import spool_lines
from monitor.core.settings import Config, HttpSourceConfig
from monitor.shell.config import spool_folder
from monitor.shell.stream import FileRecord

log = logging.getLogger(__name__)

SEGMENTS_PER_SPOOL = 8  # a segment is at most max_spool_bytes / this (so most is reclaimable)
SUFFIX = ".jsonl"
TEMPORARY = ".tmp"  # a segment being started, outside the spool source's glob


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


def _segments(folder: str) -> dict[int, str]:
    """seq -> path of the segments on disk."""
    out = {}
    for name in os.listdir(folder):
        stem = name[: -len(SUFFIX)]
        if name.endswith(SUFFIX) and stem.isdigit():
            out[int(stem)] = os.path.join(folder, name)
    return out


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """One http source's spool. `append` may be called from any HTTP thread; `release`
    from the main thread; they share only the file system: `release` deletes a segment
    only once a newer one exists, which `append` never writes again.

    Group commit: `lock` orders the writes (and guards the segment state); the fsync
    happens outside it, under `sync_lock`, and one fsync makes durable every append
    written before it. Concurrent POSTs share fsyncs instead of queueing for one each
    (an fsync is milliseconds; KServe's logger blocks inference when its queue is full).
    """

    def __init__(self, folder: str, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.segment_bytes = max(max_bytes // SEGMENTS_PER_SPOOL, 1)
        self.lock = threading.Lock()
        self.sync_lock = threading.Lock()
        self.written = 0  # appends written (under lock)
        self.synced = 0  # appends known durable (under sync_lock)
        self.retired: list[int] = []  # descriptors of older segments: fsync'd, to close
        os.makedirs(folder, mode=0o700, exist_ok=True)
        existing = _segments(folder)
        self.sizes = {seq: os.path.getsize(path) for seq, path in existing.items()}
        self.fd = -1
        self.header_bytes = 0
        self._start(max(existing, default=0) + 1)

    def _start(self, seq: int) -> None:
        """Start segment `seq`: its header is written under a temporary name first, so
        the tailer never meets an empty segment (which would look like a copy of any)."""
        path = os.path.join(self.folder, f"{seq:012d}{SUFFIX}")
        fd = os.open(path + TEMPORARY, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
                     | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        header = json.dumps({SEGMENT: f"{seq}:{os.urandom(12).hex()}"}).encode() + b"\n"
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, header)
            os.fsync(fd)
            if os.path.lexists(path):  # never replace a segment
                raise FileExistsError(errno.EEXIST, "spool segment exists", path)
            os.rename(path + TEMPORARY, path)
            _fsync_dir(self.folder)
        except OSError:
            os.close(fd)
            raise
        if self.fd >= 0:
            # Everything written to the old segment is durable before any write goes to
            # the new one; a sync in flight may still hold it, so it is closed later.
            os.fsync(self.fd)
            self.retired.append(self.fd)
        self.fd, self.seq = fd, seq
        self.sizes[seq] = self.header_bytes = len(header)

    def used(self) -> int:
        return sum(self.sizes.values())

    def append(self, data: bytes) -> bool:
        """Append and fsync `data` (whole lines); False, writing nothing, when it would
        take the spool past its bound. OSError when the disk fails: a failed write is cut
        away; after a failed fsync the disk's state is unknown (the events it covered
        may still be read)."""
        with self.lock:
            if self.used() + len(data) > self.max_bytes:
                self._forget_released()
                if self.used() + len(data) > self.max_bytes:
                    return False
            size = self.sizes[self.seq]
            if size > self.header_bytes and size + len(data) > self.segment_bytes:
                self._start(self.seq + 1)
            size = self.sizes[self.seq]
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.fd, view):]
            except OSError:
                # Cut back to the last whole event: a partial line would glue onto the next.
                os.ftruncate(self.fd, size)
                raise
            self.sizes[self.seq] = size + len(data)
            self.written += 1
            ticket = self.written
        self._sync(ticket)
        return True

    def _sync(self, ticket: int) -> None:
        """Return once append number `ticket` is durable, by an fsync of our own or by
        one that started after it was written."""
        with self.sync_lock:
            if self.synced >= ticket:
                return
            with self.lock:
                fd, target = self.fd, self.written
                retired, self.retired = self.retired, []
            for old in retired:  # fsync'd when retired; no other sync holds them now
                os.close(old)
            os.fsync(fd)
            self.synced = target

    def _forget_released(self) -> None:
        for seq in [s for s in self.sizes if s != self.seq]:
            if not os.path.exists(os.path.join(self.folder, f"{seq:012d}{SUFFIX}")):
                del self.sizes[seq]

    def release(self, records: Iterable[FileRecord]) -> int:
        """Delete the segments, older than the newest, that `records` (what a durable
        checkpoint holds) have read to the end; returns how many."""
        segments = _segments(self.folder)
        newest = max(segments, default=0)
        done = {(r.ino, r.path): r.offset for r in records}
        released = 0
        for seq, path in segments.items():
            if seq == newest:
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            if st.st_size == 0 or done.get((st.st_ino, path)) == st.st_size:
                os.unlink(path)
                released += 1
        if released:
            _fsync_dir(self.folder)
        return released

    def close(self) -> None:
        with self.sync_lock, self.lock:
            for fd in [*self.retired, self.fd]:
                if fd >= 0:
                    os.close(fd)
            self.fd, self.retired = -1, []


class Ingest:
    """The POST routes of `http_sources`: decode the event, spool it, answer."""

    def __init__(self, config: Config, clock: Callable[[], float]) -> None:
        assert config.state_dir is not None or not config.http_sources
        self.clock = clock
        self.retry_after = str(max(1, math.ceil(config.checkpoint_interval_s)))
        self.routes: dict[str, tuple[HttpSourceConfig, Spool]] = {
            h.path: (h, Spool(spool_folder(config.state_dir or "", h.name), h.max_spool_bytes))
            for h in config.http_sources
        }

    def max_body(self, path: str) -> int | None:
        """The largest body `path` takes, or None when it is not an ingest route."""
        route = self.routes.get(path)
        return None if route is None else route[0].max_spool_bytes

    def handle(self, path: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """Answer one POST to an ingest route (`headers` keyed in lower case)."""
        source, spool = self.routes[path]
        event = spool_lines(headers, body, source.output, source.model, self.clock())
        if event.lines:
            try:
                kept = spool.append(event.lines)
            except OSError as exc:
                log.error("spool write failed source=%s error=%s", source.name, exc.strerror)
                return _answer(503, "spool write failed", {"Retry-After": self.retry_after})
            if not kept:
                too_big = len(event.lines) > spool.max_bytes
                return _answer(413 if too_big else 503,
                               "event larger than max_spool_bytes" if too_big else "spool full",
                               {} if too_big else {"Retry-After": self.retry_after})
        if event.reason is not None:
            return _answer(400, f"not predictions: {event.reason.value}")
        return _answer(200, "ok")

    def release(self, records: Callable[[str], Iterable[FileRecord]]) -> None:
        """After a durable checkpoint: drop the spool segments it has read to the end.
        `records(name)` is what that checkpoint holds of source `name`'s files."""
        for source, spool in self.routes.values():
            try:
                spool.release(records(source.name))
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    log.error("spool cleanup failed source=%s error=%s", source.name, exc.strerror)

    def close(self) -> None:
        for _, spool in self.routes.values():
            spool.close()


def _answer(status: int, message: str, headers: Mapping[str, str] | None = None) -> Answer:
    body = json.dumps({"status": message}).encode() + b"\n"
    return Answer(status, {"Content-Type": "application/json", **(headers or {})}, body)
