"""Following a glob of log files: which files, and what each one is.

A file is its (st_dev, st_ino) plus a fingerprint of its first bytes, not its path:
inodes are reused, and copies (copytruncate) get a new inode with old content. File
events are only hints; every poll re-stats each open file and re-globs, then acts on
what the file system says (as mtail does): size below the offset is a truncation, a
path leading to a new inode is a new file, an open file whose path is gone was renamed
or deleted and is read to its end through the descriptor we hold.

The tailer owns the set of open files (stream.py's `Stream`: descriptor, offset, line
framing) and decides their identity with the pure functions below (`claim`, `copy_of`,
`copy_resume`, `classify`); mtail splits its tailer from its logstreams the same way.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import glob as globlib
import logging
import os
import resource
import stat
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import replace

from monitor.core.aggregate import FILE_EVENTS, SKIP_REASONS
from monitor.shell.stream import (
    FINGERPRINT_BYTES,
    Block,
    Event,
    FileRecord,
    Key,
    State,
    Stream,
    fingerprint_of,
    is_compressed,
    is_full,
    matches,
    span,
)

log = logging.getLogger(__name__)
COMPRESSED, NOT_REGULAR, PSEUDO, SYMLINK_OUTSIDE, MAX_OPEN_FILES = SKIP_REASONS
ROTATED, TRUNCATED, COPIED = FILE_EVENTS

HISTORY = 4096  # fingerprints of closed or truncated files remembered, newest kept
ROTATE_WAIT_S = 5.0  # keep reading a rotated-away file this long after its last growth
DORMANT_AFTER_S = 60.0  # close a fully read file quiet this long (reopened when it changes)


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


def classify(offset: int, size: int) -> str:
    """What happened to an open file since we read it up to `offset`."""
    if size < offset:
        return "truncated"
    return "grown" if size > offset else "same"


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


def still_copy(fingerprint: str | None, head: bytes) -> bool:
    """Whether a file held as a copy of content we read (`fingerprint`), and starting
    with `head`, may still be its copy, asked as that content leaves its file (the copy
    is complete by then): it starts with what we read, or is shorter than the bytes the
    fingerprint was taken of (a copy taken before we read the original's last lines; as
    a copy, it adds nothing). Held while empty, it may have become anything since, say
    the `.gz` logrotate creates empty before gzip fills it."""
    if is_compressed(head):
        return False  # never a copy of the text we read
    return fingerprint is None or len(head) < span(fingerprint) or matches(fingerprint, head)


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
        self.start_at_end = start_at_end
        self.monotonic = monotonic
        self.rotate_wait_s = rotate_wait_s
        self.files: dict[Key, Stream] = {}
        # Fully read files quiet for DORMANT_AFTER_S: closed, so that a glob over months
        # of retained logs does not hold a descriptor per file; reopened on change.
        self.dormant: dict[Key, FileRecord] = {}
        self.progress = 0  # bytes consumed (lines handed on, holes, over-long lines)
        # Grows with every change of what we follow (a file opened, closed, cut, skipped,
        # handed over), so that the daemon knows there is something new to checkpoint
        # even when no byte was read.
        self.changes = 0
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
        """Copies of the records to checkpoint. Held copies are left out: after a
        restart they are recognised again by their fingerprint."""
        live = [replace(f.record) for f in self.files.values() if not f.held]
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
                total += max(0, f.fstat_size() - f.record.offset)
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
        if f.state is State.GONE:
            self._forget(f)
        else:
            self._doze(f)

    def _spares(self) -> list[Stream]:
        return [f for key, f in self.files.items()
                if not f.held and not f.record.skipping and f.size <= f.record.offset
                and not self._copied(key)]

    # -- polling -----------------------------------------------------------------------

    def poll(self, budget: int) -> Iterator[Block]:
        """Re-scan the glob, then read up to about `budget` bytes of complete lines."""
        self.scan()
        for f in list(self.files.values()):
            if f.held:
                continue
            before = f.record.offset
            if (yield from f.read(budget)):
                self._skip_open(f)  # was empty when opened, now found compressed
                continue
            read = f.record.offset - before
            self.progress += read
            budget -= read
            self._maybe_forget(f, grew=read != 0)
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
                f.record.path, f.size = path, st.st_size
                f.to(Event.SEEN, now)
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
                    f.size = f.fstat_size()
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
            if key not in seen:
                f.to(Event.MISSED, now)
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
        self.changes += 1
        if reason == COMPRESSED:
            log.info("compressed file skipped, its lines were read before compression path=%s",
                     path)
        else:
            log.warning("file skipped reason=%s path=%s", reason, path)

    def _skip_open(self, f: Stream) -> None:
        """Stop following a file found compressed after it was opened."""
        self.files.pop(f.key, None)
        mtime = 0
        with contextlib.suppress(OSError):
            mtime = os.fstat(f.fd).st_mtime_ns
        self._close(f.fd)
        self._skip(f.record.path, f.key, COMPRESSED, mtime)

    def _check_truncation(self, f: Stream) -> None:
        if f.original is not None:
            self._check_twin(f, f.original)
            return  # a held copy is static; its offset is the original's
        change = classify(f.record.offset, f.size)
        if change == "same" or (change == "grown" and not f.rewritten()):
            return
        log.info("file truncated path=%s offset=%d size=%d", f.record.path, f.record.offset, f.size)
        self.new_events[TRUNCATED] += 1
        self.changes += 1
        # The copy made before this truncation (if we follow it) holds the lines between
        # our offset and the copy: it continues where we stopped in the original.
        self._hand_over(f)
        f.record.offset = f.record.line_no = 0
        f.record.fingerprint, f.record.skipping = None, False

    def _hand_over(self, f: Stream) -> None:
        """The content `f` held is leaving it (cut or closed): a held copy of it takes
        over at our offset; without one, remember where we were in that content."""
        rec = f.record
        held = [(t, head) for t in self.files.values() if t.original == rec.key
                if (head := _head(t)) is not None]
        copies = [t for t, head in held if still_copy(rec.fingerprint, head)]
        if copies:
            twin = copies[0]
            self.changes += 1
            self.new_events[COPIED] += 1  # counted once it proves one (an empty new file
            twin.to(Event.RELEASE, self.monotonic())  # beside a renamed one looks like one)
            with contextlib.suppress(OSError):
                twin.size = twin.fstat_size()
            twin.record.offset, twin.record.skipping = copy_resume(rec.offset, rec.skipping,
                                                                   twin.size)
            twin.record.line_no, twin.record.fingerprint = rec.line_no, rec.fingerprint
            for other in copies[1:]:  # further copies now copy the new holder
                other.to(Event.HOLD, self.monotonic(), twin.key)
        elif rec.fingerprint is not None:
            self._remember(rec.fingerprint, rec.offset)
        for t, head in held:
            if t not in copies:
                # Held while empty, filled since with something else (logrotate's .gz is
                # created empty before gzip writes it): judged again by what it holds now.
                self.changes += 1
                self._place(t, head)

    def _admit(self, path: str, fd: int, st: os.stat_result) -> None:
        """Start following a file not followed yet, deciding where to begin."""
        key = (st.st_dev, st.st_ino)
        try:
            head = os.pread(fd, FINGERPRINT_BYTES, 0)
        except OSError as exc:
            log.warning("cannot read path=%s error=%s", path, exc.strerror)
            self._close(fd)
            return
        self.changes += 1
        record = FileRecord(key[0], key[1], None, path, 0, 0)
        f = Stream(record, fd, st.st_size, self.max_line_bytes)
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
            record.offset, record.skipping = f.last_line_end()
        self.files[key] = f

    def _place(self, f: Stream, head: bytes) -> bool:
        """Where a file we start to follow begins, judged by the `head` it holds now: a
        copy of a followed file is held until that one is cut; content cut or closed
        before resumes where we were in it. False if it is new content."""
        rec = f.record
        original = self._original_of(head)  # never itself: a held copy is no original
        if original is not None:
            f.to(Event.HOLD, self.monotonic(), original)
            log.info("copy of a followed file, held until the original is cut path=%s", rec.path)
            return True
        f.to(Event.RELEASE, self.monotonic())
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
                     if not f.held and _copy_of(f, head)), None)

    def _check_twin(self, f: Stream, original_key: Key) -> None:
        """A held copy that stopped matching its original is placed again by what it
        holds now: held while empty, it may have been taken for a copy of any followed
        file (all start with no bytes), and be the copy of another one, or of content
        cut since; or be a new file after all (say a fresh empty log beside the one
        renamed away, since written to), read from 0."""
        original = self.files.get(original_key)
        head = _head(f)
        if head is None:
            return
        if original is None or not _copy_of(original, head):
            self.changes += 1
            self._place(f, head)

    def _known(self, head: bytes) -> str | None:
        """The remembered fingerprint (cut or closed content, or a dormant file's) this
        file starts with: its content up to that offset was read already."""
        for rec in self.dormant.values():
            if is_full(rec.fingerprint) and matches(rec.fingerprint, head):
                self._remember(rec.fingerprint, rec.offset)
                return rec.fingerprint
        for n in sorted({span(fp) for fp in self.history}, reverse=True):
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
        self.files[key] = Stream(rec, fd, now.st_size, self.max_line_bytes)
        self.changes += 1

    def _rest(self) -> None:
        """Close files fully read and quiet for DORMANT_AFTER_S (still on the glob)."""
        now = self.monotonic()
        for key, f in list(self.files.items()):
            if f.state is not State.FOLLOWED:
                continue  # gone: its clock is the one `_maybe_forget` reads; held: none
            if f.record.skipping or f.size > f.record.offset:
                f.since = None
            elif f.since is None:
                f.since = now
            elif now - f.since >= DORMANT_AFTER_S and not self._copied(key):
                self._doze(f)

    def _doze(self, f: Stream) -> None:
        """Close a fully read file still on the glob; reopened when it changes."""
        self._close(f.fd)
        del self.files[f.key]
        self.dormant[f.key] = f.record
        self.changes += 1

    def _copied(self, key: Key) -> bool:
        return any(t.original == key for t in self.files.values())

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
                            self.files[rec.key].to(Event.MISSED, self.monotonic())
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

    def _maybe_forget(self, f: Stream, grew: bool) -> None:
        """Close a rotated-away or deleted file once it has been quiet for a while."""
        if f.state is not State.GONE:
            return
        now = self.monotonic()
        if grew or f.since is None:
            f.since = now
            return
        if now - f.since < self.rotate_wait_s:
            return
        self._forget(f)

    def _forget(self, f: Stream) -> None:
        """Close a rotated-away or deleted file for good."""
        self.new_events[ROTATED] += 1  # not on a scan that merely missed it mid-rename
        self._hand_over(f)
        self._close(f.fd)
        del self.files[f.key]
        self.changes += 1

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


def _head(f: Stream) -> bytes | None:
    """Its first bytes now; None if they cannot be read (it then takes over nothing)."""
    try:
        return f.head()
    except OSError:
        return None


def _copy_of(original: Stream, head: bytes) -> bool:
    """`copy_of` for an open original, read now."""
    return copy_of(original.record.fingerprint, _head(original) or b"", head)


def _spare_rank(f: Stream) -> tuple[int, float]:
    return (0 if f.state is State.GONE else 1, f.since or 0.0)


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
