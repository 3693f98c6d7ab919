"""Following a glob of log files: file identity, offsets, rotation, partial lines.

A file is its (st_dev, st_ino) plus a fingerprint of its first bytes, not its path:
inodes are reused, and copies (copytruncate) get a new inode with old content. File
events are only hints; every poll re-stats each open file and re-globs, then acts on
what the file system says (as mtail does): size below the offset is a truncation, a
path leading to a new inode is a new file, an open file whose path is gone was renamed
or deleted and is read to its end through the descriptor we hold.

Only complete lines are handed on; a partial last line waits, re-read from its start on
the next poll, so the recorded offset always sits on a line boundary (or inside an
over-long line being skipped, which the record says).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import glob as globlib
import hashlib
import logging
import os
import re
import resource
import stat
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TypeGuard

from monitor.core.aggregate import FILE_EVENTS, SKIP_REASONS

log = logging.getLogger(__name__)
_HOLE = re.compile(rb"^\0+", re.MULTILINE)
COMPRESSED, NOT_REGULAR, PSEUDO, SYMLINK_OUTSIDE, MAX_OPEN_FILES = SKIP_REASONS
ROTATED, TRUNCATED, COPIED = FILE_EVENTS
# What logrotate's compressors write first: gzip, bzip2, xz, zstd.
COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")

Key = tuple[int, int]  # (st_dev, st_ino)
# A fingerprint is `n:hash` of the first n bytes we consumed, n up to this (Vector's
# default too). Only full-length ones identify a copy of a followed file: shorter heads
# collide too easily (two small files starting with the same line). Short ones still
# recognise the copy of a file cut before we had read this much of it.
FINGERPRINT_BYTES = 256
HISTORY = 4096  # fingerprints of closed or truncated files remembered, newest kept
ROTATE_WAIT_S = 5.0  # keep reading a rotated-away file this long after its last growth
DORMANT_AFTER_S = 60.0  # close a fully read file quiet this long (reopened when it changes)
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


@dataclass(slots=True)
class _Open:
    record: FileRecord
    fd: int
    idle_since: float | None = None  # monotonic time it was last seen at EOF, off the glob
    twin_of: Key | None = None  # a copy of a live file, read only once that one is cut
    gone: bool = False  # no longer reachable by the glob (renamed away or deleted)
    size: int = 0  # as of the last scan
    quiet_since: float | None = None  # monotonic time it was last found fully read


def descriptor_budget(wanted: int, reserve: int = 64) -> int:
    """`max_open_files`, within the process limit (`ulimit -n`, systemd's LimitNOFILE)
    less `reserve` for the checkpoint, the metrics sockets and inotify."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - reserve))


class Descriptors:
    """The budget of descriptors every source's tailer shares (`max_open_files`). When
    it is spent, an open first closes a file another needs least (rotated away and
    read to its end, then read to its end and idle); with none, the open is refused,
    counted, and retried on the next poll."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.tailers: list[Tailer] = []

    def acquire(self) -> bool:
        if self.held < self.limit:
            self.held += 1
            return True
        victims = [(t.spare(), t) for t in self.tailers]
        best = min(((rank, t) for (rank, t) in victims if rank is not None),
                   key=lambda item: item[0], default=None)
        if best is None:
            return False
        best[1].release_spare()  # gives one back
        self.held += 1
        return True

    def release(self) -> None:
        self.held -= 1


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


def matches(fp: str, head: bytes) -> bool:
    """Whether a file starting with `head` starts with the bytes `fp` was taken of."""
    n = int(fp.split(":", 1)[0])
    return len(head) >= n and fingerprint_of(head[:n]) == fp


def classify(offset: int, size: int) -> str:
    """What happened to an open file since we read it up to `offset`."""
    if size < offset:
        return "truncated"
    return "grown" if size > offset else "same"


def strip_holes(lines: bytes) -> bytes:
    """Complete lines without the NUL runs that start any of them (a file hole a writer
    without O_APPEND left after copytruncate); the number of lines stays."""
    return _HOLE.sub(b"", lines)


def is_compressed(head: bytes) -> bool:
    """Whether a file starting with `head` is a compressed rotation (never text lines:
    they were read before compression, from the file it was made of)."""
    return head.startswith(COMPRESSED_MAGIC)


def glob_root(pattern: str) -> tuple[str, bool]:
    """The deepest folder of a glob without a wildcard, and whether folders below it
    matter too (a wildcard in the folder part)."""
    folders = os.path.dirname(pattern).split(os.sep)
    first_wild = next((i for i, p in enumerate(folders) if any(ch in p for ch in "*?[")),
                      len(folders))
    return os.sep.join(folders[:first_wild]) or os.sep, first_wild < len(folders)


def claim(records: list[FileRecord], key: Key, head: bytes) -> int | None:
    """Which checkpoint record (its index) a file with inode `key` starting with `head`
    continues: the record of its very inode, unless that inode now holds other first
    bytes (reused, or cut and rewritten); else one whose full fingerprint it starts with
    (a copy of it made while we were down); else none."""
    for i, rec in enumerate(records):
        if rec.key == key and (rec.fingerprint is None or matches(rec.fingerprint, head)):
            return i
    for i, rec in enumerate(records):
        if is_full(rec.fingerprint) and matches(rec.fingerprint, head):
            return i
    return None


def copy_of(fingerprint: str | None, original_head: bytes, head: bytes) -> bool:
    """Whether a file starting with `head` is a copy of a followed file, or may be
    becoming one: `head` stands at the start of the original as it is now
    (`original_head`; a copy being written shows a prefix, and we may not have read the
    original yet), or at the start of what we consumed of it (`fingerprint`; the
    original may have been cut since, and we not know it yet)."""
    if is_full(fingerprint) and matches(fingerprint, head):
        return True
    return original_head.startswith(head)


def copy_resume(offset: int, skipping: bool, copy_size: int) -> tuple[int, bool]:
    """Where a copy continues from its original, read up to `offset` (`skipping` an
    over-long line there): at the same offset, but never beyond what the copy holds.
    A copy taken before we read the original's last lines holds only part of what we
    consumed: all of it read, nothing in it is new. (Taken as a truncation instead, it
    would be read again from its start.)"""
    if copy_size < offset:
        return copy_size, False
    return offset, skipping


class Tailer:
    """Follows one source's glob. Not thread-safe: the daemon's main thread owns it."""

    def __init__(
        self,
        pattern: str,
        max_line_bytes: int,
        start_at_end: bool = False,
        records: list[FileRecord] | None = None,
        history: dict[str, int] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        rotate_wait_s: float = ROTATE_WAIT_S,
        skipped: list[tuple[int, int, str, int]] | None = None,
        follow_symlinks: bool = False,
        descriptors: Descriptors | None = None,
    ) -> None:
        self.pattern = pattern
        self.max_line_bytes = max_line_bytes
        # No complete line in a chunk can then be longer than max_line_bytes, so over-long
        # lines are found without looking at each line.
        self.chunk = min(CHUNK_BYTES, max_line_bytes + 1)
        self.start_at_end = start_at_end
        self.monotonic = monotonic
        self.rotate_wait_s = rotate_wait_s
        self.files: dict[Key, _Open] = {}
        # Fully read files quiet for DORMANT_AFTER_S: closed, so that a glob over months
        # of retained logs does not hold a descriptor per file; reopened on change.
        self.dormant: dict[Key, FileRecord] = {}
        # Grows with every byte consumed and every change of what we follow, so that the
        # daemon knows there is something new to checkpoint.
        self.progress = 0
        self.history: OrderedDict[str, int] = OrderedDict(history or {})
        self.pending_records = list(records or [])
        self.first_scan = True
        # Files matched and not read, by inode: (reason, st_mtime_ns when decided). Kept
        # in the checkpoint so that each is counted once, not once per start; the
        # newest HISTORY kept.
        self.skipped: dict[Key, tuple[str, int]] = {
            (dev, ino): (reason, mtime) for dev, ino, reason, mtime in skipped or []}
        self.new_skips: Counter[str] = Counter()  # not yet handed to the aggregator
        self.new_events: Counter[str] = Counter()  # rotations, truncations, copies: likewise
        self.follow_symlinks = follow_symlinks
        self.root = os.path.realpath(glob_root(pattern)[0])
        self.descriptors = descriptors or Descriptors(1 << 30)
        self.descriptors.tailers.append(self)
        self.failing: dict[str, str] = {}  # path -> why it cannot be opened, said once

    # -- state -------------------------------------------------------------------------

    def records(self) -> list[FileRecord]:
        """Copies of the records to checkpoint. Held copies (twins) are left out: after a
        restart they are recognised again by their fingerprint."""
        live = [replace(f.record) for f in self.files.values() if f.twin_of is None]
        return live + [replace(r) for r in self.dormant.values()] + list(self.pending_records)

    def skipped_state(self) -> list[tuple[int, int, str, int]]:
        return [(dev, ino, reason, mtime) for (dev, ino), (reason, mtime) in self.skipped.items()]

    def take_skips(self) -> Counter[str]:
        """Files skipped since the last call, by reason."""
        skips, self.new_skips = self.new_skips, Counter()
        return skips

    def take_events(self) -> Counter[str]:
        """Rotations, truncations and copies seen since the last call."""
        events, self.new_events = self.new_events, Counter()
        return events

    def backlog_bytes(self) -> int:
        """Bytes written to followed files and not yet read (for progress reports)."""
        total = 0
        for f in self.files.values():
            try:
                total += max(0, os.fstat(f.fd).st_size - f.record.offset)
            except OSError:
                continue
        return total

    def close(self) -> None:
        for f in self.files.values():
            self._close(f.fd)
        self.files.clear()
        if self in self.descriptors.tailers:
            self.descriptors.tailers.remove(self)

    def spare(self) -> tuple[int, float] | None:
        """How little we need the file we would give up first (lower: less), if any:
        one rotated away and read to its end, oldest first; then one read to its end
        and idle (it goes dormant, reopened when it changes)."""
        return min((_spare_rank(f) for f in self._spares()), default=None)

    def release_spare(self) -> None:
        f = min(self._spares(), key=_spare_rank)
        if f.gone:
            self._forget(f.record.key, f)
        else:
            self._doze(f.record.key, f)

    def _spares(self) -> list[_Open]:
        return [f for key, f in self.files.items()
                if f.twin_of is None and not f.record.skipping and f.size <= f.record.offset
                and not self._copied(key)]

    # -- polling -----------------------------------------------------------------------

    def poll(self, budget: int) -> Iterator[Block]:
        """Re-scan the glob, then read up to about `budget` bytes of complete lines."""
        self.scan()
        for key in list(self.files):
            f = self.files[key]
            if f.twin_of is not None:
                continue
            before = f.record.offset
            yield from self._read(f, budget)
            if key not in self.files:  # found compressed: closed and skipped
                continue
            budget -= f.record.offset - before
            self._maybe_forget(key, f, grew=f.record.offset != before)
            if budget <= 0:
                return
        self._rest()

    def scan(self) -> None:
        """Re-glob and re-stat: follow new files, notice truncation and renames. One
        stat per file and poll (the glob's); an fstat only for files off the glob."""
        now = self.monotonic()
        seen: set[Key] = set()
        fresh: list[tuple[str, int, os.stat_result]] = []
        for path in sorted(globlib.glob(self.pattern)):
            try:
                st = os.lstat(path)
                link = stat.S_ISLNK(st.st_mode)
                if link:
                    st = os.stat(path)
            except OSError:  # gone meanwhile, a link loop, no permission
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:  # a second name (a link, a hard link) of a file seen this scan
                continue
            seen.add(key)
            if link and not self.follow_symlinks and not _inside(os.path.realpath(path), self.root):
                self._skip(path, key, SYMLINK_OUTSIDE, st.st_mtime_ns)
                continue
            if self._skips(path, key, st):
                continue
            f = self.files.get(key)
            if f is not None:
                f.record.path, f.gone, f.idle_since, f.size = path, False, None, st.st_size
            elif key in self.dormant:
                self._wake(path, key, st)
            elif (opened := self._open(path)) is not None:
                fresh.append((path, *opened))
        for key in [k for k in self.dormant if k not in seen]:
            # Fully read and now off the glob: only its content needs remembering.
            rec = self.dormant.pop(key)
            if rec.fingerprint is not None:
                self._remember(rec.fingerprint, rec.offset)
        for key, f in self.files.items():
            if key not in seen:
                try:
                    f.size = os.fstat(f.fd).st_size
                except OSError:
                    continue
            self._check_truncation(f)
        # Files that are the very inode of a checkpoint record claim it first; only then
        # may other files claim a record by content (copies made while we were down).
        pending = {rec.key for rec in self.pending_records}
        fresh.sort(key=lambda item: (item[2].st_dev, item[2].st_ino) not in pending)
        for path, fd, st in fresh:
            self._admit(path, fd, st)
        if self.pending_records:
            self._resume_moved()
        for key, f in self.files.items():
            if key not in seen and not f.gone:
                f.gone, f.idle_since = True, now
        self.first_scan = False

    def _skips(self, path: str, key: Key, st: os.stat_result) -> bool:
        """Whether to leave this glob match alone, judged by its stat alone: nothing is
        opened (an open and close of a FIFO would wake our own inotify watch, and the
        next poll open it again: a spin)."""
        reason = NOT_REGULAR if not stat.S_ISREG(st.st_mode) else (
            PSEUDO if st.st_dev in _pseudo_devices() else None)
        known = self.skipped.get(key)
        if reason is None:
            # Compressed, unchanged since; changed, it is opened and judged again.
            return known is not None and known[1] == st.st_mtime_ns
        if known is None or known[0] != reason:
            self._skip(path, key, reason, st.st_mtime_ns)
        return True

    def _skip(self, path: str, key: Key, reason: str, mtime_ns: int) -> None:
        known = self.skipped.get(key)
        self.skipped[key] = (reason, mtime_ns)
        if known is not None and known[0] == reason:
            return  # still being written, say: counted and reported once
        # Kept while off the glob too (a rename seen half-way must not count it again);
        # the oldest forgotten first. A reused inode is judged by what it holds now.
        while len(self.skipped) > HISTORY:
            del self.skipped[next(iter(self.skipped))]
        self.new_skips[reason] += 1
        self.progress += 1
        if reason == COMPRESSED:
            log.info("compressed file skipped, its lines were read before compression path=%s",
                     path)
        else:
            log.warning("file skipped reason=%s path=%s", reason, path)

    def _skip_open(self, f: _Open) -> None:
        """Stop following a file found compressed after it was opened."""
        self.files.pop(f.record.key, None)
        mtime = 0
        with contextlib.suppress(OSError):
            mtime = os.fstat(f.fd).st_mtime_ns
        self._close(f.fd)
        self._skip(f.record.path, f.record.key, COMPRESSED, mtime)

    def _check_truncation(self, f: _Open) -> None:
        if f.twin_of is not None:
            self._check_twin(f, f.twin_of)
            return  # a held copy is static; its offset is the original's
        change = classify(f.record.offset, f.size)
        if change == "same" or (change == "grown" and not self._rewritten(f)):
            return
        log.info("file truncated path=%s offset=%d size=%d", f.record.path, f.record.offset, f.size)
        self.new_events[TRUNCATED] += 1
        self.progress += 1
        # The copy made before this truncation (if we follow it) holds the lines between
        # our offset and the copy: it continues where we stopped in the original.
        self._hand_over(f)
        f.record.offset = f.record.line_no = 0
        f.record.fingerprint, f.record.skipping = None, False

    def _rewritten(self, f: _Open) -> bool:
        """Cut and written past our offset again between two scans (copytruncate, then
        a burst): the size alone looks like growth, the first bytes tell."""
        if f.record.fingerprint is None:
            return False
        try:
            head = os.pread(f.fd, FINGERPRINT_BYTES, 0)
        except OSError:
            return False
        return not matches(f.record.fingerprint, head)

    def _hand_over(self, f: _Open) -> None:
        """The content `f` held is leaving it (cut or closed): a held copy of it takes
        over at our offset; without one, remember where we were in that content."""
        rec = f.record
        twin = next((t for t in self.files.values() if t.twin_of == rec.key), None)
        if twin is not None:
            self.progress += 1
            self.new_events[COPIED] += 1  # counted once it proves one (an empty new file
            twin.twin_of = None           # beside a renamed one looks like a copy at first)
            with contextlib.suppress(OSError):
                twin.size = os.fstat(twin.fd).st_size
            twin.record.offset, twin.record.skipping = copy_resume(rec.offset, rec.skipping,
                                                                   twin.size)
            twin.record.line_no, twin.record.fingerprint = rec.line_no, rec.fingerprint
            for other in self.files.values():  # further copies now copy the new holder
                if other.twin_of == rec.key:
                    other.twin_of = twin.record.key
        elif rec.fingerprint is not None:
            self._remember(rec.fingerprint, rec.offset)

    def _admit(self, path: str, fd: int, st: os.stat_result) -> None:
        """Start following a file not followed yet, deciding where to begin."""
        key = (st.st_dev, st.st_ino)
        try:
            head = os.pread(fd, FINGERPRINT_BYTES, 0)
        except OSError as exc:
            log.warning("cannot read path=%s error=%s", path, exc.strerror)
            self._close(fd)
            return
        self.progress += 1
        record = FileRecord(key[0], key[1], None, path, 0, 0)
        f = _Open(record, fd, size=st.st_size)
        if is_compressed(head):
            self.files[key] = f
            self._skip_open(f)
            return
        self.skipped.pop(key, None)
        index = claim(self.pending_records, key, head)
        if index is not None:
            restored = self.pending_records.pop(index)
            record.offset, record.skipping = restored.offset, restored.skipping
            if restored.key != key:  # a copy: it may hold less than we read of the original
                self.new_events[COPIED] += 1
                record.offset, record.skipping = copy_resume(restored.offset, restored.skipping,
                                                             st.st_size)
            record.line_no, record.fingerprint = restored.line_no, restored.fingerprint
        elif not self._place(f, head) and self.first_scan and self.start_at_end:
            record.offset, record.skipping = _last_line_end(fd, st.st_size, self.chunk)
        self.files[key] = f

    def _place(self, f: _Open, head: bytes) -> bool:
        """Where a file we start to follow begins, judged by the `head` it holds now: a
        copy of a followed file is held until that one is cut; content cut or closed
        before resumes where we were in it. False if it is new content."""
        rec = f.record
        f.twin_of = self._original_of(head)  # never itself: a held copy is no original
        if f.twin_of is not None:
            log.info("copy of a followed file, held until the original is cut path=%s", rec.path)
            return True
        if (known := self._known(head)) is not None:
            rec.fingerprint = known
            rec.offset, _ = copy_resume(self.history.pop(known), False, f.size)
            log.info("known content re-appeared, resuming path=%s offset=%d", rec.path, rec.offset)
            self.new_events[COPIED] += 1
            return True
        return False

    def _original_of(self, head: bytes) -> Key | None:
        """A followed file that this one is a copy of, or may be becoming one."""
        return next((key for key, f in self.files.items()
                     if f.twin_of is None and _copy_of(f, head)), None)

    def _check_twin(self, f: _Open, original_key: Key) -> None:
        """A held copy that stopped matching its original is placed again by what it
        holds now: held while empty, it may have been taken for a copy of any followed
        file (all start with no bytes), and be the copy of another one, or of content
        cut since; or be a new file after all (say a fresh empty log beside the one
        renamed away, since written to), read from 0."""
        original = self.files.get(original_key)
        try:
            head = os.pread(f.fd, FINGERPRINT_BYTES, 0)
        except OSError:
            return
        if original is None or not _copy_of(original, head):
            self.progress += 1
            self._place(f, head)

    def _known(self, head: bytes) -> str | None:
        """The remembered fingerprint (cut or closed content, or a dormant file's) this
        file starts with: its content up to that offset was read already."""
        for rec in self.dormant.values():
            if is_full(rec.fingerprint) and matches(rec.fingerprint, head):
                self._remember(rec.fingerprint, rec.offset)
                return rec.fingerprint
        for n in sorted({int(fp.split(":", 1)[0]) for fp in self.history}, reverse=True):
            fp = fingerprint_of(head[:n]) if len(head) >= n else None
            if fp in self.history:
                return fp
        return None

    def _wake(self, path: str, key: Key, st: os.stat_result) -> None:
        """A dormant file seen by the glob: reopen it if it changed."""
        rec = self.dormant[key]
        rec.path = path
        if st.st_size == rec.offset:
            return
        opened = self._open(path)
        if opened is None:
            return
        fd, now = opened
        if (now.st_dev, now.st_ino) != key:  # replaced between stat and open
            self._close(fd)
            return
        del self.dormant[key]
        self.files[key] = _Open(rec, fd, size=now.st_size)
        self.progress += 1

    def _rest(self) -> None:
        """Close files fully read and quiet for DORMANT_AFTER_S (still on the glob)."""
        now = self.monotonic()
        for key, f in list(self.files.items()):
            if f.gone or f.twin_of is not None or f.record.skipping or f.size > f.record.offset:
                f.quiet_since = None
                continue
            if f.quiet_since is None:
                f.quiet_since = now
            elif now - f.quiet_since >= DORMANT_AFTER_S and not self._copied(key):
                self._doze(key, f)

    def _doze(self, key: Key, f: _Open) -> None:
        """Close a fully read file still on the glob; reopened when it changes."""
        self._close(f.fd)
        del self.files[key]
        self.dormant[key] = f.record
        self.progress += 1

    def _copied(self, key: Key) -> bool:
        return any(t.twin_of == key for t in self.files.values())

    def _resume_moved(self) -> None:
        """Checkpointed files the glob no longer finds: look for their inode beside
        their old path (renamed while we were down) and read them to their end."""
        for rec in list(self.pending_records):
            folder = os.path.dirname(rec.path) or "."
            try:
                names = os.listdir(folder)
            except OSError:
                names = []
            for name in names:
                path = os.path.join(folder, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) == rec.key and rec.key not in self.files:
                    opened = self._open(path)
                    if opened is not None:
                        self._admit(path, *opened)
                        if rec.key in self.files:  # not skipped (found compressed, say)
                            self.files[rec.key].gone = True
                    break
        # What is still unclaimed is gone; its content may re-appear as a copy.
        for rec in self.pending_records:
            if rec.fingerprint is not None:
                self._remember(rec.fingerprint, rec.offset)
        self.pending_records.clear()

    def _remember(self, fp: str, offset: int) -> None:
        self.history[fp] = offset
        self.history.move_to_end(fp)
        while len(self.history) > HISTORY:
            self.history.popitem(last=False)

    def _maybe_forget(self, key: Key, f: _Open, grew: bool) -> None:
        """Close a rotated-away or deleted file once it has been quiet for a while."""
        if not f.gone:
            return
        now = self.monotonic()
        if grew or f.idle_since is None:
            f.idle_since = now
            return
        if now - f.idle_since < self.rotate_wait_s:
            return
        self._forget(key, f)

    def _forget(self, key: Key, f: _Open) -> None:
        """Close a rotated-away or deleted file for good."""
        self.new_events[ROTATED] += 1  # not on a scan that merely missed it mid-rename
        self._hand_over(f)
        self._close(f.fd)
        del self.files[key]
        self.progress += 1

    def _open(self, path: str) -> tuple[int, os.stat_result] | None:
        """A regular file opened for reading, within the descriptor budget. Anything
        else the glob matches (a FIFO that would block, a socket: replaced since its
        stat) or cannot open is left for now, its reason said once; retried each poll."""
        if not self.descriptors.acquire():
            why = f"max_open_files={self.descriptors.limit} reached"
            if self.failing.get(path) != why:
                self.new_skips[MAX_OPEN_FILES] += 1  # once per file, until it is opened
            self._failed(path, why)
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            self.descriptors.release()
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                # The process or system ran out before our budget did: hold no more.
                self.descriptors.limit = self.descriptors.held
                log.warning("out of file descriptors (%s): max_open_files lowered to %d",
                            exc.strerror, self.descriptors.limit)
                self.new_skips[MAX_OPEN_FILES] += 1
            self._failed(path, exc.strerror or str(exc))
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            self._close(fd)
            self._failed(path, "not a regular file")
            return None
        if self.failing.pop(path, None) is not None:
            log.info("file readable again path=%s", path)
        return fd, st

    def _failed(self, path: str, why: str) -> None:
        if self.failing.get(path) != why:
            self.failing[path] = why
            log.warning("cannot open path=%s error=%s (retried on every poll)", path, why)
        while len(self.failing) > HISTORY:
            del self.failing[next(iter(self.failing))]

    def _close(self, fd: int) -> None:
        os.close(fd)
        self.descriptors.release()

    def _read(self, f: _Open, budget: int) -> Iterator[Block]:
        rec = f.record
        if f.size <= rec.offset and not rec.skipping:
            return  # nothing new since the scan: no read for an idle file
        while budget > 0:
            try:
                data = os.pread(f.fd, self.chunk, rec.offset)
            except OSError as exc:  # an I/O error on the disk or network file system
                log.warning("cannot read path=%s offset=%d error=%s", rec.path, rec.offset,
                            exc.strerror)
                return
            if not data:
                return
            if rec.offset == 0 and is_compressed(data):  # was empty when we opened it
                self._skip_open(f)
                return
            if rec.offset and self._rewritten(f):
                # Cut and rewritten since the scan: these bytes may belong to the new
                # content. Leave them; the next scan starts that content from 0.
                return
            if rec.skipping:
                end = data.find(b"\n")
                if end < 0:
                    rec.offset += len(data)
                    self.progress += len(data)
                    continue
                rec.offset += end + 1
                self.progress += end + 1
                rec.line_no += 1
                rec.skipping = False
                yield Block(rec.path, rec.line_no, b"", 1, too_long=True)
                continue
            if data[:1] == b"\0":
                # A hole: copytruncate under a writer without O_APPEND, which writes on
                # at its old offset. Not a line; the line after it is.
                hole = len(data) - len(data.lstrip(b"\0"))
                rec.offset += hole
                self.progress += hole
                continue
            used = complete_prefix(data)
            if not used and len(data) == self.chunk <= self.max_line_bytes:
                # A line longer than a chunk may still be within the limit: look further.
                data = os.pread(f.fd, self.max_line_bytes + 1, rec.offset)
                used = complete_prefix(data)
            if not used:
                if len(data) > self.max_line_bytes:
                    rec.skipping = True  # never hold an over-long line in memory whole
                    rec.offset += len(data)
                    self.progress += len(data)
                    continue
                return  # a partial line: wait until it is complete
            count = data.count(b"\n", 0, used)
            lines = data[:used] if used < len(data) else data
            if b"\0" in lines:  # rare: only then look for holes before lines
                lines = strip_holes(lines)
            block = Block(rec.path, rec.line_no + 1, lines, count)
            rec.line_no += count
            budget -= used
            yield block
            rec.offset += used
            self.progress += used
            if not is_full(rec.fingerprint):
                # Of what we consumed: the content we would not want to read twice.
                head = data if rec.offset == used else os.pread(f.fd, FINGERPRINT_BYTES, 0)
                rec.fingerprint = fingerprint_of(head[: min(rec.offset, FINGERPRINT_BYTES)])


def _copy_of(original: _Open, head: bytes) -> bool:
    """`copy_of` for an open original, read now."""
    try:
        original_head = os.pread(original.fd, FINGERPRINT_BYTES, 0)
    except OSError:
        original_head = b""
    return copy_of(original.record.fingerprint, original_head, head)


def _spare_rank(f: _Open) -> tuple[int, float]:
    return (0, f.idle_since or 0.0) if f.gone else (1, f.quiet_since or 0.0)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


@functools.cache
def _pseudo_devices() -> frozenset[int]:
    """The devices of /proc and /sys: their files are not logs (sizes of 0, contents
    generated on each read)."""
    devices = set()
    for folder in ("/proc", "/sys"):
        with contextlib.suppress(OSError):
            devices.add(os.stat(folder).st_dev)
    return frozenset(devices)


def _last_line_end(fd: int, size: int, window: int) -> tuple[int, bool]:
    """Where `start_at: end` begins: just after the last newline; inside a line longer
    than `window`, skipping the rest of it."""
    start = max(0, size - window)
    tail = os.pread(fd, size - start, start)
    end = tail.rfind(b"\n")
    return (start + end + 1, False) if end >= 0 else (start, start > 0)
