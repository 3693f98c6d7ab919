"""State files: a snapshot, and a journal of what changed since it.

A checkpoint must make the file offsets and the aggregates as of exactly those offsets
durable together, so a restart resumes with neither a line counted twice nor one lost.
Rewriting the whole state every second costs terabytes a day once the join store holds a
million ids, so the state lives in two files in `state_dir` (both 0600, the folder 0700):

- `checkpoint.npz`, the snapshot: a magic line, then an uncompressed .npz (a zip of .npy
  arrays, read with every member's size checked against its header, its zip entry and a
  budget derived from the config *before* anything is allocated; no pickles) with a JSON
  metadata member carrying `version` and the snapshot's `generation`.
- `journal`: a header naming the generation of the snapshot it continues, then one
  record per checkpoint: `<magic, length, raw length, CRC-32>` and a zlib-compressed body
  holding the metadata that changed (offsets, counters), the array rows that changed
  since the previous record (a diff against a copy of what is durable), and the join
  stores' inputs since then (each waiting id is written once). A record is written with
  one write() and fsync'd: it is the unit of durability, as the whole file was before.

Restore reads the snapshot, then applies the records of its own generation in order. A
torn last record (a crash or power cut during its write: cut short, or a bad CRC at the
very end of the file) was never durable, so it was never published: it is ignored. Any
other damage (a bad record followed by more, an absurd length, a record that does not fit
the state) is a CheckpointError: the files are moved aside and the daemon starts fresh.

Compaction writes a new snapshot (a new random generation; temp file, fsync, rename, fsync the
folder) and then a new empty journal the same way, when the journal has grown past
COMPACT_RATIO times the snapshot (and at least MIN_COMPACT_BYTES), at start-up, after a
reload and after any failed write (a failed append may have left a partial record that
would hide every later one). A crash between the two renames leaves a snapshot newer
than the journal's generation: the journal is then ignored, which is right, since the
snapshot holds everything it did.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import struct
import time
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, cast

import numpy as np
import numpy.typing as npt

from monitor.core.errors import CheckpointError
from monitor.core.join import ExpireOp, Op, decode_ops, encode_ops

__all__ = ["CheckpointError"]

VERSION = 3
READABLE_VERSIONS = (2, 3)  # version 2 (v0.1) has no journal: generation 0
FILENAME = "checkpoint.npz"
JOURNAL = "journal"
META = "__meta__"
MAGIC = b"drift-monitor checkpoint\n"
JOURNAL_MAGIC = b"drift-monitor journal\n"
RECORD = struct.Struct("<4sIII")  # magic, body length, raw length, CRC-32 of the rest
RECORD_MAGIC = b"DMJR"
GENERATION = struct.Struct("<Q")
MAX_META_BYTES = 64 << 20
COMPACT_RATIO = 4
MIN_COMPACT_BYTES = 64 << 20
FILE_MODE = 0o600
DIR_MODE = 0o700
# Array types a checkpoint may hold; anything else (objects, pickles) is refused.
DTYPES = frozenset({"<f8", "<i8", "<i4", "<i2", "|u1", "|b1"})
# What zipfile and numpy raise on a damaged archive or member.
_DAMAGE = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
           NotImplementedError,  # zipfile: an unsupported compression method
           RuntimeError)  # zipfile: an encrypted member

Arrays = dict[str, npt.NDArray]
JoinInputs = list[tuple[str, float, int, list[Op]]]


# -- private files ---------------------------------------------------------------------


def make_state_dir(path: str) -> None:
    """Create `path` 0700 (whatever the umask) when it does not exist; an existing
    folder is the operator's and keeps its mode."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        os.mkdir(path, DIR_MODE)
    os.chmod(path, DIR_MODE)  # the umask may have taken bits away from the mkdir above


def _create_private(path: str) -> int:
    """A new file at `path`, 0600 whatever the umask, that is not reached through a
    symlink: a leftover at `path` (a temp file from a crash, or a planted symlink) is
    unlinked, not followed, then O_EXCL | O_NOFOLLOW create it anew. A directory there
    fails (OSError), as a full disk would."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


def _fsync_dir(folder: str) -> None:
    dir_fd = os.open(folder or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _replace_atomically(path: str, stream: Callable[[IO[bytes]], object]) -> int:
    """`stream(fh)` into `path`.tmp, fsync, rename over `path`, fsync the folder: after a
    crash `path` is the old file or the new one, never a mix. Returns the bytes written."""
    tmp = f"{path}.tmp"
    fd = _create_private(tmp)
    with open(fd, "wb") as fh:
        stream(fh)
        fh.flush()
        os.fsync(fh.fileno())
        size = fh.tell()
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))
    return size


# -- snapshot ----------------------------------------------------------------------------


def _stream(fh: IO[bytes], meta: dict, arrays: Mapping[str, npt.NDArray]) -> None:
    payload = json.dumps({"version": VERSION, "arrays": sorted(arrays), **meta},
                         separators=(",", ":")).encode()
    fh.write(MAGIC)
    members: dict[str, Any] = {META: np.frombuffer(payload, dtype=np.uint8), **arrays}
    np.savez(fh, **members)


def _member(npz: zipfile.ZipFile, name: str, budget: int) -> npt.NDArray:
    """One .npy member, its sizes checked before anything is allocated: stored (not
    deflated: no inflation), its header's shape times its type exactly what the zip entry
    holds, and no more than `budget` bytes."""
    try:
        info = npz.getinfo(f"{name}.npy")
    except KeyError:
        raise CheckpointError(f"checkpoint array {name}: missing") from None
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
        raise CheckpointError(f"checkpoint array {name}: compressed (we never write that)")
    if info.file_size > budget:
        raise CheckpointError(f"checkpoint array {name}: {info.file_size} bytes, more than "
                              f"this config can need ({budget})")
    with npz.open(info) as fh:
        major, _ = np.lib.format.read_magic(fh)
        read_header = (np.lib.format.read_array_header_1_0 if major == 1
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(fh)
        if dtype.str not in DTYPES or fortran:
            raise CheckpointError(f"checkpoint array {name}: type {dtype.str} not allowed")
        declared = math.prod(shape) * dtype.itemsize
        if fh.tell() + declared != info.file_size:
            raise CheckpointError(f"checkpoint array {name}: header declares {declared} "
                                  f"bytes, the entry holds {info.file_size - fh.tell()}")
        out = np.empty(shape, dtype=dtype)
        view = out.data.cast("B") if out.size else memoryview(bytearray())
        reader = cast(io.BufferedIOBase, fh)
        got = 0
        while got < declared:
            n = reader.readinto(view[got:])
            if not n:
                raise CheckpointError(f"checkpoint array {name}: cut short")
            got += n
        fh.read(1)  # at the end of the entry: zipfile checks its CRC-32
    return out


def _load(fh: IO[bytes], budget: int) -> tuple[dict, Arrays]:
    if fh.read(len(MAGIC)) != MAGIC:
        raise CheckpointError("not a drift-monitor checkpoint")
    try:
        with zipfile.ZipFile(fh) as npz:
            meta_bytes = _member(npz, META, MAX_META_BYTES)
            try:
                meta = json.loads(meta_bytes.tobytes())
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                raise CheckpointError("checkpoint metadata is not JSON") from None
            if not isinstance(meta, dict) or meta.get("version") not in READABLE_VERSIONS:
                version = meta.get("version") if isinstance(meta, dict) else None
                raise CheckpointError(f"checkpoint version {version!r}, expected {VERSION}")
            names = meta.get("arrays")
            members = {n.removesuffix(".npy") for n in npz.namelist()} - {META}
            if not isinstance(names, list) or set(names) != members:
                raise CheckpointError("checkpoint arrays do not match their list: the file "
                                      "is corrupt")
            arrays: Arrays = {}
            for name in names:
                arrays[name] = _member(npz, name, budget)
                budget -= arrays[name].nbytes
    except _DAMAGE as exc:
        raise CheckpointError(f"unreadable checkpoint: {exc}") from None
    return meta, arrays


def encode(meta: dict, arrays: Mapping[str, npt.NDArray]) -> bytes:
    """The bytes a snapshot puts on disk (for tests and tools)."""
    buf = io.BytesIO()
    _stream(buf, meta, arrays)
    return buf.getvalue()


def decode(data: bytes, budget: int = 1 << 40) -> tuple[dict, Arrays]:
    """Metadata and every array of snapshot bytes, all read and checked now."""
    return _load(io.BytesIO(data), budget)


def write(path: str, meta: dict, arrays: Mapping[str, npt.NDArray]) -> int:
    """The snapshot at `path`, atomically (see `_replace_atomically`); returns its size."""
    return _replace_atomically(path, lambda fh: _stream(fh, meta, arrays))


# -- journal records ------------------------------------------------------------------


def encode_record(meta: dict, arrays: Mapping[str, npt.NDArray]) -> bytes:
    """One journal record: header, then zlib(JSON head + the arrays' bytes, shuffled)."""
    head = json.dumps({"meta": meta, "arrays": [[name, a.dtype.str, list(a.shape)]
                                                for name, a in arrays.items()]},
                      separators=(",", ":")).encode()
    raw = b"".join([struct.pack("<I", len(head)), head, *(_shuffled(a) for a in arrays.values())])
    body = zlib.compress(raw, 1)
    sizes = struct.pack("<II", len(body), len(raw))
    return RECORD.pack(RECORD_MAGIC, len(body), len(raw), zlib.crc32(body, zlib.crc32(sizes))) + body


def _shuffled(a: npt.NDArray) -> bytes:
    """The array's bytes grouped by their place in each item (all first bytes, then all
    second bytes...), as blosc does: the high bytes of nearby times, counters and
    probabilities repeat, which zlib then finds (a record shrinks about 2x more)."""
    items = np.ascontiguousarray(a).reshape(-1).view(np.uint8).reshape(-1, a.dtype.itemsize)
    return items.T.tobytes()


def _unshuffled(raw: bytes, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> npt.NDArray:
    n = math.prod(shape)
    planes = np.frombuffer(raw, dtype=np.uint8, count=n * dtype.itemsize, offset=offset)
    return planes.reshape(dtype.itemsize, n).T.copy().view(dtype).reshape(shape)


def decode_record_body(body: bytes, raw_len: int) -> tuple[dict, Arrays]:
    """The metadata and arrays of one record's body (its CRC already checked), inflated
    to at most `raw_len` bytes, every declared size checked against what is there."""
    if raw_len < 4:  # (and max_length 0 would mean "no bound" to zlib)
        raise CheckpointError("journal record too short")
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(body, raw_len)
        rest = b"" if inflate.eof else inflate.decompress(inflate.unconsumed_tail, 1)
    except zlib.error as exc:
        raise CheckpointError(f"journal record does not inflate: {exc}") from None
    if len(raw) != raw_len or rest or not inflate.eof or inflate.unused_data:
        raise CheckpointError("journal record inflates to another length than declared")
    (head_len,) = struct.unpack_from("<I", raw)
    try:
        head = json.loads(raw[4:4 + head_len])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError("journal record head is not JSON") from None
    if not isinstance(head, dict) or not isinstance(head.get("meta"), dict) or not isinstance(
            head.get("arrays"), list):
        raise CheckpointError("journal record head is not {meta, arrays}")
    arrays: Arrays = {}
    offset = 4 + head_len
    for entry in head["arrays"]:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                and entry[1] in DTYPES and isinstance(entry[2], list)
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                        for d in entry[2])):
            raise CheckpointError(f"journal record array entry {str(entry)[:80]} is malformed")
        name, dtype, shape = entry[0], np.dtype(entry[1]), tuple(entry[2])
        size = math.prod(shape) * dtype.itemsize
        if offset + size > len(raw):
            raise CheckpointError(f"journal record array {name} runs past the record")
        arrays[name] = _unshuffled(raw, offset, dtype, shape)
        offset += size
    if offset != len(raw):
        raise CheckpointError("journal record holds bytes no array claims")
    return head["meta"], arrays


def _read_records(data: bytes, max_record_bytes: int) -> tuple[list[tuple[dict, Arrays]], bool]:
    """The records of a journal body; also whether a torn last record was ignored."""
    out: list[tuple[dict, Arrays]] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < RECORD.size:
            return out, True  # a header cut short: the last write never completed
        magic, body_len, raw_len, crc = RECORD.unpack_from(data, pos)
        if magic != RECORD_MAGIC or body_len > max_record_bytes or raw_len > max_record_bytes:
            if magic == b"\0\0\0\0" and not any(data[pos:]):
                return out, True  # zeros to the end: blocks allocated, never written
            raise CheckpointError(f"journal record at byte {pos}: bad magic or absurd length "
                                  f"({body_len}/{raw_len} bytes, at most {max_record_bytes})")
        end = pos + RECORD.size + body_len
        if end > len(data):
            return out, True
        body = data[pos + RECORD.size:end]
        if zlib.crc32(body, zlib.crc32(struct.pack("<II", body_len, raw_len))) != crc:
            if end == len(data):
                return out, True  # the last record, torn by a power cut
            raise CheckpointError(f"journal record at byte {pos}: CRC mismatch with "
                                  f"{len(data) - end} bytes after it")
        out.append(decode_record_body(body, raw_len))
        pos = end
    return out, False


# -- deltas ------------------------------------------------------------------------------


def diff(old: Mapping[str, npt.NDArray], new: Mapping[str, npt.NDArray]) -> Arrays:
    """The arrays of a record that turn `old` into `new`: `=name` a whole array (new,
    reshaped, or more than half its rows changed), `+name` / `@name` changed rows and
    their indices (rows along the first axis; compared bit for bit, so NaN == NaN)."""
    out: Arrays = {}
    for name, a in new.items():
        b = old.get(name)
        if b is None or b.dtype != a.dtype or b.shape != a.shape or a.ndim == 0:
            out[f"={name}"] = a
            continue
        n = len(a)
        if n == 0:
            continue
        changed = np.flatnonzero((_bits(a) != _bits(b)).any(axis=1))
        if len(changed) * 2 > n:
            out[f"={name}"] = a
        elif len(changed):
            out[f"@{name}"] = changed.astype(np.int64)
            out[f"+{name}"] = a[changed]
    return out


def _bits(a: npt.NDArray) -> npt.NDArray[np.uint8]:
    return np.ascontiguousarray(a).view(np.uint8).reshape(len(a), -1)


def apply(arrays: Arrays, delta: Mapping[str, npt.NDArray]) -> None:
    """Apply what `diff` made to `arrays`, in place; checked (CheckpointError)."""
    for key, value in delta.items():
        kind, name = key[:1], key[1:]
        if kind == "=":
            arrays[name] = value
        elif kind == "@":
            rows = delta.get(f"+{name}")
            target = arrays.get(name)
            if rows is None or target is None or value.dtype != np.int64 or value.ndim != 1:
                raise CheckpointError(f"journal rows of {name}: no such array or rows")
            if rows.dtype != target.dtype or rows.shape != (len(value), *target.shape[1:]):
                raise CheckpointError(f"journal rows of {name}: {rows.dtype}{list(rows.shape)} "
                                      f"do not fit {target.dtype}{list(target.shape)}")
            if len(value) and (value.min() < 0 or value.max() >= len(target)):
                raise CheckpointError(f"journal rows of {name}: index out of range")
            target[value] = rows
        elif kind != "+":
            raise CheckpointError(f"journal array {key}: unknown kind")


# -- the two files together ---------------------------------------------------------------


@dataclass
class Saved:
    """What restore found: the snapshot's metadata and arrays with every journal record
    applied, and the join stores' inputs recorded since the snapshot, in order."""

    meta: dict
    arrays: Arrays
    joins: JoinInputs = field(default_factory=list)
    records: int = 0
    torn: bool = False
    # A v0.1 (version 2) snapshot: the parts of each model that start empty, as
    # "<model>: <part>, ..." (see `_upgrade_v2`); None for a snapshot of this version.
    upgraded: list[str] | None = None


def _join_inputs(meta: dict, arrays: Mapping[str, npt.NDArray]) -> JoinInputs:
    entries = meta.get("joins", [])
    if not isinstance(entries, list):
        raise CheckpointError("journal joins: expected a list")
    out: JoinInputs = []
    for n, entry in enumerate(entries):
        if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str)
                and isinstance(entry[1], float | int) and isinstance(entry[2], int)
                and entry[2] > 0):
            raise CheckpointError(f"journal joins[{n}]: malformed")
        prefix = f"o{n}."
        mine = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        ops = decode_ops(entry[3], _with_shared_rows(mine, arrays))
        out.append((entry[0], float(entry[1]), entry[2], ops))
    return out


def record_limit(budget: int) -> int:
    """The largest journal record: a state's arrays (`budget`) and its metadata."""
    return budget + MAX_META_BYTES


def journal_limit(budget: int) -> int:
    """Compaction keeps a journal below this: one record past its threshold, which is
    at most COMPACT_RATIO snapshots (each at most a record's size)."""
    return max(MIN_COMPACT_BYTES, COMPACT_RATIO * record_limit(budget)) + record_limit(budget)


def load(state_dir: str, budget: int) -> Saved | None:
    """The state in `state_dir` (None when there is none). `budget`: the most bytes of
    arrays the config can need; larger declared sizes are refused before allocation."""
    path = os.path.join(state_dir, FILENAME)
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed right below)
    except FileNotFoundError:
        return None
    with fh:
        meta, arrays = _load(fh, budget)
    try:
        with open(os.path.join(state_dir, JOURNAL), "rb") as jh:
            limit = journal_limit(budget)
            if os.fstat(jh.fileno()).st_size > limit:
                raise CheckpointError(f"journal larger than this config can need ({limit})")
            journal = jh.read()
    except FileNotFoundError:
        journal = b""
    return restore(meta, arrays, journal, budget)


def restore(meta: dict, arrays: Arrays, journal: bytes, budget: int) -> Saved:
    """A decoded snapshot with the records of `journal` (the journal file's bytes) that
    continue it applied. Pure: the fuzz tests call it on bytes."""
    upgraded = None
    if meta.get("version") == 2:
        meta, arrays, upgraded = _upgrade_v2(meta, arrays)
    generation = meta.get("generation", 0)
    if not isinstance(generation, int) or isinstance(generation, bool):
        raise CheckpointError("checkpoint generation is not an integer")
    saved = Saved(meta, arrays, upgraded=upgraded)
    header = len(JOURNAL_MAGIC) + GENERATION.size
    if len(journal) < header:
        return saved  # none, or a header cut short: nothing was appended to it
    if journal[:len(JOURNAL_MAGIC)] != JOURNAL_MAGIC:
        raise CheckpointError("not a drift-monitor journal")
    if GENERATION.unpack_from(journal, len(JOURNAL_MAGIC))[0] != generation:
        return saved  # older than the snapshot, which holds all of it
    records, saved.torn = _read_records(journal[header:], record_limit(budget))
    for record_meta, record_arrays in records:
        joins = _join_inputs(record_meta, record_arrays)
        apply(saved.arrays, {k: v for k, v in record_arrays.items() if not k.startswith("o")})
        # A record's sections replace the snapshot's whole; those it lacks (the join
        # stores, journaled as their inputs) keep the snapshot's.
        saved.meta = {**saved.meta, **{k: v for k, v in record_meta.items() if k != "joins"}}
        saved.joins.extend(joins)
    saved.records = len(records)
    return saved


# A v0.1 model's parts whose sum rows lack columns of this version's (see `_upgrade_v2`).
V2_EMPTIED = ("reference.", "window.")


def _upgrade_v2(meta: dict, arrays: Arrays) -> tuple[dict, Arrays, list[str]]:
    """A version 2 (v0.1) snapshot as version 3 has it, and what starts empty.

    Version 2 kept each join store inside its model's entry, arrays `j<model>.`;
    version 3 lists the stores apart, arrays `j<store>.`. The offsets, counters and join
    stores carry over exactly. A v0.1 sum row (time windows, references) lacks the sums
    of p^2 and every labelled-row sum but the label counts and log loss, and a v0.1
    count window lacks its rows' event times: none can be rebuilt, and half a row would
    export statistics of sums that do not belong together, so each model's windows and
    reference are left out (they start empty, as a window new in the config does).
    `log_loss_sum_total` did not exist: it starts at 0."""
    aggregator = meta.get("aggregator")
    if not isinstance(aggregator, dict) or not isinstance(aggregator.get("models"), list):
        return meta, arrays, []  # the aggregator's own checks report it
    stores: list[dict] = []
    out = {k: v for k, v in arrays.items() if not k.startswith("j")}
    emptied = []
    for i, entry in enumerate(aggregator["models"]):
        gone = [k for k in out if k.startswith(tuple(f"m{i}.{p}" for p in V2_EMPTIED))]
        parts = sorted({k[len(f"m{i}."):].rsplit(".", 1)[0] for k in gone})
        for key in gone:
            del out[key]
        out[f"m{i}.log_loss_sum_total"] = np.zeros(1)
        name = entry.get("name") if isinstance(entry, dict) else None
        emptied.append(f"{name}: {', '.join(parts) or 'nothing'}")
        if isinstance(entry, dict) and "join" in entry:
            prefix, n = f"j{i}.", len(stores)
            stores.append({"model": name, "join": entry["join"]})
            out.update({f"j{n}.{k[len(prefix):]}": v for k, v in arrays.items()
                        if k.startswith(prefix)})
    return {**meta, "stores": stores}, out, emptied


def move_aside(state_dir: str, now: float) -> list[str]:
    """Keep unusable state files for inspection, out of the way of the next start."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    moved = []
    for name in (FILENAME, JOURNAL):
        path = os.path.join(state_dir, name)
        if os.path.lexists(path):
            os.replace(path, f"{path}.corrupt-{stamp}")
            moved.append(f"{path}.corrupt-{stamp}")
    return moved


class Journal:
    """Writes checkpoints into `state_dir`: a snapshot now and then, a record otherwise.

    `shadow` is a copy of the journaled arrays as they are durable, the base of the next
    diff; `broken` says the next checkpoint must be a snapshot (none yet, a reload, or a
    failed write)."""

    def __init__(self, state_dir: str, budget: int, max_inputs: int = 1 << 62) -> None:
        self.state_dir = state_dir
        self.budget = budget
        # Join inputs are replayed row by row at restore, which costs far more per row
        # than loading a snapshot's: compacting after `max_inputs` of them bounds the
        # restart time, not only the journal's size.
        self.max_inputs = max_inputs
        self.inputs = 0
        self.snapshot_path = os.path.join(state_dir, FILENAME)
        self.journal_path = os.path.join(state_dir, JOURNAL)
        self.shadow: Arrays = {}
        self.snapshot_bytes = 0
        self.journal_bytes = 0
        self.written = 0  # bytes written to the state files, ever (for the benchmark)
        self.broken = True

    def wants_snapshot(self) -> bool:
        return self.broken or self.inputs > self.max_inputs or self.journal_bytes > max(
            MIN_COMPACT_BYTES, COMPACT_RATIO * self.snapshot_bytes)

    def snapshot(self, meta: dict, journaled: Mapping[str, npt.NDArray],
                 others: Mapping[str, npt.NDArray]) -> None:
        """A full snapshot of `journaled` arrays (which later records diff) and `others`
        (which they do not: the join stores, journaled as their inputs), then an empty
        journal of its generation: a random number, so that no journal left by an
        earlier snapshot (or an earlier state_dir's) can ever be taken for this one's."""
        self.broken = True  # until both files are in place
        generation = int.from_bytes(os.urandom(8), "little") >> 1
        size = write(self.snapshot_path, {**meta, "generation": generation},
                     {**journaled, **others})
        header = journal_header(generation)
        _replace_atomically(self.journal_path, lambda fh: fh.write(header))
        self.snapshot_bytes, self.journal_bytes, self.inputs = size, len(header), 0
        self.written += size + len(header)
        self.shadow = {name: a.copy() for name, a in journaled.items()}
        self.broken = False

    def append(self, meta: dict, journaled: Mapping[str, npt.NDArray], joins: JoinInputs) -> bool:
        """One record of what changed since the last checkpoint, appended and fsync'd.
        False (nothing written) when it would be larger than a snapshot may be: then the
        caller writes a snapshot instead."""
        record, delta = make_record(self.shadow, meta, journaled, joins)
        if len(record) > record_limit(self.budget):
            return False
        self.broken = True  # until the record is durable: a partial one hides the rest
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            view = memoryview(record)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        self.journal_bytes += len(record)
        self.written += len(record)
        self.inputs += sum(len(op.ids) for *_, ops in joins for op in ops
                           if not isinstance(op, ExpireOp))
        apply(self.shadow, {key: a.copy() for key, a in delta.items()})
        self.broken = False
        return True


def make_record(shadow: Mapping[str, npt.NDArray], meta: dict,
                journaled: Mapping[str, npt.NDArray], joins: JoinInputs) -> tuple[bytes, Arrays]:
    """The journal record that takes `shadow` (the journaled arrays as durable) to
    `journaled`, with `meta` and the join stores' inputs; and its array delta."""
    delta = diff(shadow, journaled)
    entries: list = []
    ops: Arrays = {}
    for n, (model, ttl_s, max_pending, inputs) in enumerate(joins):
        kinds, op_arrays = encode_ops(inputs)
        entries.append([model, ttl_s, max_pending, kinds])
        ops.update({f"o{n}.{key}": a for key, a in _share_rows(op_arrays, delta).items()})
    return encode_record({**meta, "joins": entries}, {**delta, **ops}), delta


# A waiting prediction's probabilities are usually also a new row of its model's count
# window in the same record: written once, the join input refers to that row. Generic:
# rows are matched bit for bit against every `+` (changed rows) array of the record
# with the same type and width, taken in name order as one pool.
SHARED, REFS = "~", "^"


def _pool(arrays: Mapping[str, npt.NDArray], like: npt.NDArray) -> npt.NDArray:
    parts = [a for key, a in sorted(arrays.items()) if key.startswith("+") and a.ndim == 2
             and a.dtype == like.dtype and a.shape[1:] == like.shape[1:]]
    return np.concatenate(parts) if parts else like[:0]


def _rows_as_bytes(a: npt.NDArray) -> list[bytes]:
    rows = np.ascontiguousarray(a).view(np.dtype((np.void, a.dtype.itemsize * a.shape[1])))
    return cast(list[bytes], rows.ravel().tolist())


def _share_rows(op_arrays: Arrays, delta: Mapping[str, npt.NDArray]) -> Arrays:
    out: Arrays = {}
    for key, a in op_arrays.items():
        pool = _pool(delta, a) if key.endswith(".probs") and a.ndim == 2 and len(a) else None
        if pool is None or not len(pool):
            out[key] = a
            continue
        index = {row: i for i, row in enumerate(_rows_as_bytes(pool))}
        refs = np.array([index.get(row, -1) for row in _rows_as_bytes(a)], dtype=np.int64)
        out[key + REFS] = refs
        out[key + SHARED] = a[refs < 0]
    return out


def _with_shared_rows(mine: Arrays, record: Mapping[str, npt.NDArray]) -> Arrays:
    """What `_share_rows` wrote, with every referred row back in place (checked)."""
    out = {k: v for k, v in mine.items() if not k.endswith((REFS, SHARED))}
    for key, refs in mine.items():
        if not key.endswith(REFS):
            continue
        name = key[:-len(REFS)]
        rest = mine.get(name + SHARED)
        if rest is None or rest.ndim != 2 or refs.dtype != np.int64 or refs.ndim != 1:
            raise CheckpointError(f"journal op rows {name}: malformed")
        pool = _pool(record, rest)
        missing = refs < 0
        if int(missing.sum()) != len(rest) or (len(refs) and refs.max() >= len(pool)):
            raise CheckpointError(f"journal op rows {name}: references out of range")
        rows = np.empty((len(refs), rest.shape[1]), dtype=rest.dtype)
        rows[missing] = rest
        rows[~missing] = pool[refs[~missing]]
        out[name] = rows
    return out


def journal_header(generation: int) -> bytes:
    return JOURNAL_MAGIC + GENERATION.pack(generation)
