"""One open log file: its descriptor, its offset, and the complete lines read from it.

The glob tailer (tail.py) decides which file a stream is and what it continues; a
stream only reads. Only complete lines are handed on; a partial last line waits,
re-read from its start on the next read, so the recorded offset always sits on a line
boundary (or inside an over-long line being skipped, which the record says).

A stream's `state` says how the tailer treats it (read it? is it on the glob?); every
change of it goes through `Stream.to`, by the table `TRANSITIONS`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Generator
from dataclasses import dataclass
from enum import Enum
from typing import TypeGuard

log = logging.getLogger(__name__)
_HOLE = re.compile(rb"^\0+", re.MULTILINE)
# What logrotate's compressors write first: gzip, bzip2, xz, zstd.
COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")

Key = tuple[int, int]  # (st_dev, st_ino)
# A fingerprint is `n:hash` of the first n bytes we consumed, n up to this (Vector's
# default too). Only full-length ones identify a copy of a followed file: shorter heads
# collide too easily (two small files starting with the same line). Short ones still
# recognise the copy of a file cut before we had read this much of it.
FINGERPRINT_BYTES = 256
CHUNK_BYTES = 1 << 20  # a read; complete lines in it are never longer than max_line_bytes


@dataclass(slots=True)
class Block:
    """Complete lines read from one file (each ending in a newline), or one over-long
    line that was skipped (no data)."""

    path: str
    first_line: int  # 1-based number of the first line
    data: bytes
    lines: int
    too_long: bool = False


@dataclass(slots=True)
class FileRecord:
    """What the checkpoint keeps of one followed file."""

    dev: int
    ino: int
    fingerprint: str | None
    path: str
    offset: int
    line_no: int
    skipping: bool = False

    @property
    def key(self) -> Key:
        return (self.dev, self.ino)


def complete_prefix(data: bytes) -> int:
    """Bytes of `data` up to and including its last newline: the complete lines."""
    return data.rfind(b"\n") + 1


def fingerprint_of(head: bytes) -> str | None:
    """`n:hash` of the first n = min(len(head), FINGERPRINT_BYTES) bytes; None if empty."""
    n = min(len(head), FINGERPRINT_BYTES)
    if n == 0:
        return None
    return f"{n}:{hashlib.blake2b(head[:n], digest_size=12).hexdigest()}"


def is_full(fp: str | None) -> TypeGuard[str]:
    return fp is not None and fp.startswith(f"{FINGERPRINT_BYTES}:")


def span(fp: str) -> int:
    """How many first bytes `fp` was taken of."""
    return int(fp.split(":", 1)[0])


def matches(fp: str, head: bytes) -> bool:
    """Whether a file starting with `head` starts with the bytes `fp` was taken of."""
    n = span(fp)
    return len(head) >= n and fingerprint_of(head[:n]) == fp


def strip_holes(lines: bytes) -> bytes:
    """Complete lines without the NUL runs that start any of them (a file hole a writer
    without O_APPEND left after copytruncate); the number of lines stays."""
    return _HOLE.sub(b"", lines)


def is_compressed(head: bytes) -> bool:
    """Whether a file starting with `head` is a compressed rotation (never text lines:
    they were read before compression, from the file it was made of)."""
    return head.startswith(COMPRESSED_MAGIC)


class State(Enum):
    """How the tailer treats an open file."""

    FOLLOWED = "followed"  # on the glob: read as it grows
    GONE = "gone"  # off the glob (renamed away, deleted): read to its end, then closed
    HELD = "held"  # a copy of a followed file (copytruncate): not read until that one is cut
    HELD_GONE = "held_gone"  # such a copy, off the glob too


class Event(Enum):
    """What the tailer finds out about an open file."""

    SEEN = "seen"  # the glob matched it on a scan
    MISSED = "missed"  # a scan's glob did not match it
    HOLD = "hold"  # its first bytes are (or may become) those of a followed file
    RELEASE = "release"  # its original was cut, or it stopped matching: it is itself


_F, _G, _H, _HG = State.FOLLOWED, State.GONE, State.HELD, State.HELD_GONE
# Every state and event: holding and releasing keep whether the file is on the glob,
# a scan keeps whether it is held. (Only new or held files are ever held; a total
# table still keeps an unforeseen order of events from stopping the daemon.)
TRANSITIONS: dict[tuple[State, Event], State] = {
    (_F, Event.SEEN): _F, (_F, Event.MISSED): _G, (_F, Event.HOLD): _H, (_F, Event.RELEASE): _F,
    (_G, Event.SEEN): _F, (_G, Event.MISSED): _G, (_G, Event.HOLD): _HG, (_G, Event.RELEASE): _G,
    (_H, Event.SEEN): _H, (_H, Event.MISSED): _HG, (_H, Event.HOLD): _H, (_H, Event.RELEASE): _F,
    (_HG, Event.SEEN): _H, (_HG, Event.MISSED): _HG, (_HG, Event.HOLD): _HG,
    (_HG, Event.RELEASE): _G,
}
_OFF_GLOB = frozenset((_G, _HG))
_HELD = frozenset((_H, _HG))


class Stream:
    """One open file, read from `record.offset` on. The tailer owns the descriptor's
    budget; the stream only closes it when told."""

    __slots__ = ("chunk", "fd", "max_line_bytes", "original", "record", "since", "size",
                 "state")

    def __init__(self, record: FileRecord, fd: int, size: int, max_line_bytes: int) -> None:
        self.record = record
        self.fd = fd
        self.size = size  # as of the last scan
        self.state = State.FOLLOWED
        self.original: Key | None = None  # while held: the followed file it copies
        # Monotonic time since which it is quiet: while gone, since it left the glob or
        # last grew (closed for good after a while); while followed, since it was found
        # fully read (closed as dormant after a while); None while not counting.
        self.since: float | None = None
        self.max_line_bytes = max_line_bytes
        # No complete line in a chunk can then be longer than max_line_bytes, so over-long
        # lines are found without looking at each line.
        self.chunk = min(CHUNK_BYTES, max_line_bytes + 1)

    @property
    def key(self) -> Key:
        return self.record.key

    @property
    def held(self) -> bool:
        return self.state in _HELD

    def to(self, event: Event, now: float, original: Key | None = None) -> None:
        """The one place a stream changes state (`original` with HOLD). Leaving the
        glob starts the quiet clock, coming back or being held stops it."""
        old, new = self.state, TRANSITIONS[self.state, event]
        if new in _OFF_GLOB and old not in _OFF_GLOB:
            self.since = now
        elif (new not in _OFF_GLOB and old in _OFF_GLOB) or (new is _H and old is not _H):
            self.since = None
        self.state = new
        if event is Event.HOLD:
            self.original = original
        elif new not in _HELD:
            self.original = None

    def head(self) -> bytes:
        """Its first bytes as they are now (raises OSError)."""
        return os.pread(self.fd, FINGERPRINT_BYTES, 0)

    def fstat_size(self) -> int:
        """Its size now (raises OSError)."""
        return os.fstat(self.fd).st_size

    def rewritten(self) -> bool:
        """Cut and written past our offset again between two scans (copytruncate, then
        a burst): the size alone looks like growth, the first bytes tell."""
        if self.record.fingerprint is None:
            return False
        try:
            head = self.head()
        except OSError:
            return False
        return not matches(self.record.fingerprint, head)

    def read(self, budget: int) -> Generator[Block, None, bool]:
        """Complete lines from the offset on, about `budget` bytes of them; the offset
        moves past each block once it has been taken. Returns True if the file turned
        out compressed (it was empty when opened): nothing of it is read."""
        rec = self.record
        if self.size <= rec.offset and not rec.skipping:
            return False  # nothing new since the scan: no read for an idle file
        while budget > 0:
            try:
                data = os.pread(self.fd, self.chunk, rec.offset)
            except OSError as exc:  # an I/O error on the disk or network file system
                log.warning("cannot read path=%s offset=%d error=%s", rec.path, rec.offset,
                            exc.strerror)
                return False
            if not data:
                return False
            if rec.offset == 0 and is_compressed(data):  # was empty when we opened it
                return True
            if rec.offset and self.rewritten():
                # Cut and rewritten since the scan: these bytes may belong to the new
                # content. Leave them; the next scan starts that content from 0.
                return False
            if rec.skipping:
                end = data.find(b"\n")
                if end < 0:
                    rec.offset += len(data)
                    continue
                rec.offset += end + 1
                rec.line_no += 1
                rec.skipping = False
                yield Block(rec.path, rec.line_no, b"", 1, too_long=True)
                continue
            if data[:1] == b"\0":
                # A hole: copytruncate under a writer without O_APPEND, which writes on
                # at its old offset. Not a line; the line after it is.
                rec.offset += len(data) - len(data.lstrip(b"\0"))
                continue
            used = complete_prefix(data)
            if not used and len(data) == self.chunk <= self.max_line_bytes:
                # A line longer than a chunk may still be within the limit: look further.
                data = os.pread(self.fd, self.max_line_bytes + 1, rec.offset)
                used = complete_prefix(data)
            if not used:
                if len(data) > self.max_line_bytes:
                    rec.skipping = True  # never hold an over-long line in memory whole
                    rec.offset += len(data)
                    continue
                return False  # a partial line: wait until it is complete
            count = data.count(b"\n", 0, used)
            lines = data[:used] if used < len(data) else data
            if b"\0" in lines:  # rare: only then look for holes before lines
                lines = strip_holes(lines)
            block = Block(rec.path, rec.line_no + 1, lines, count)
            rec.line_no += count
            budget -= used
            yield block
            rec.offset += used
            if not is_full(rec.fingerprint):
                # Of what we consumed: the content we would not want to read twice.
                head = data if rec.offset == used else self.head()
                rec.fingerprint = fingerprint_of(head[: min(rec.offset, FINGERPRINT_BYTES)])
        return False

    def last_line_end(self) -> tuple[int, bool]:
        """Where `start_at: end` begins: just after the last newline; inside a line
        longer than a chunk, skipping the rest of it."""
        start = max(0, self.size - self.chunk)
        tail = os.pread(self.fd, self.size - start, start)
        end = tail.rfind(b"\n")
        return (start + end + 1, False) if end >= 0 else (start, start > 0)
