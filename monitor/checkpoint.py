"""Checkpoint encoding and atomic writes.

One file holds the file offsets and the aggregates as of exactly those offsets, so a
restart resumes with neither a line counted twice nor one lost. The format is a magic
line, then an uncompressed .npz (a zip of .npy arrays, loaded with allow_pickle=False:
no code runs on load) with a JSON metadata member; `version` guards the layout.

Integrity: zip keeps a CRC-32 of every member and checks it when the member is read,
and the metadata lists every array, so a torn or flipped byte is one clear
CheckpointError, never wrong state. (A separate digest of the whole file cost as much
as writing it: the state is tens of MB when count windows are large.) The file is
streamed to disk and read back one array at a time, so neither step holds a second
copy of the state in memory.
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO

import numpy as np
import numpy.typing as npt

from monitor.errors import MonitorError

VERSION = 2
FILENAME = "checkpoint.npz"
META = "__meta__"
MAGIC = b"drift-monitor checkpoint\n"
# What zipfile and numpy raise on a damaged archive or member.
_DAMAGE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, TypeError,
           RuntimeError)  # RuntimeError also covers zipfile's 'unsupported method'


class CheckpointError(MonitorError):
    """A checkpoint that cannot be read: corrupt, truncated or from an unknown version."""


class Arrays(Mapping[str, npt.NDArray]):
    """The arrays of an open checkpoint, each read (and its CRC checked) on access."""

    def __init__(self, npz: np.lib.npyio.NpzFile, names: list[str]) -> None:
        self.npz = npz
        self.names = names

    def __getitem__(self, name: str) -> npt.NDArray:
        if name not in self.names:
            raise KeyError(name)
        try:
            return self.npz[name]
        except _DAMAGE as exc:
            raise CheckpointError(f"unreadable checkpoint array {name}: {exc}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def _stream(fh: IO[bytes], meta: dict, arrays: dict[str, npt.NDArray]) -> None:
    payload = json.dumps({"version": VERSION, "arrays": sorted(arrays), **meta},
                         separators=(",", ":")).encode()
    fh.write(MAGIC)
    np.savez(fh, **{META: np.frombuffer(payload, dtype=np.uint8)}, **arrays)


def _load(fh: IO[bytes]) -> tuple[dict, Arrays]:
    if fh.read(len(MAGIC)) != MAGIC:
        raise CheckpointError("not a drift-monitor checkpoint")
    try:
        npz = np.load(fh, allow_pickle=False)  # lazy: members are read on access
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise CheckpointError("not a drift-monitor checkpoint")
        meta = json.loads(npz[META].tobytes())
    except _DAMAGE as exc:
        raise CheckpointError(f"unreadable checkpoint: {exc}") from None
    if not isinstance(meta, dict) or meta.get("version") != VERSION:
        version = meta.get("version") if isinstance(meta, dict) else None
        raise CheckpointError(f"checkpoint version {version!r}, expected {VERSION}")
    names = meta.get("arrays")
    if not isinstance(names, list) or set(names) != set(npz.files) - {META}:
        raise CheckpointError("checkpoint arrays do not match their list: the file is corrupt")
    return meta, Arrays(npz, names)


def encode(meta: dict, arrays: dict[str, npt.NDArray]) -> bytes:
    """The bytes `write` puts on disk (for tests and tools)."""
    buf = io.BytesIO()
    _stream(buf, meta, arrays)
    return buf.getvalue()


def decode(data: bytes) -> tuple[dict, dict[str, npt.NDArray]]:
    """Metadata and every array of checkpoint bytes, all read and checked now."""
    meta, arrays = _load(io.BytesIO(data))
    return meta, {name: arrays[name] for name in arrays}


def write(path: str, meta: dict, arrays: dict[str, npt.NDArray]) -> None:
    """Stream to a temp file, fsync, rename over `path`, fsync the folder: after a crash
    the file is either the old checkpoint or the new one, never a mix."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as fh:
        _stream(fh, meta, arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextmanager
def opened(path: str) -> Iterator[tuple[dict, Arrays] | None]:
    """The checkpoint at `path` while it is open (None when there is none); its arrays
    are read on access, and raise CheckpointError when damaged."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed below, after the caller is done)
    except FileNotFoundError:
        yield None
        return
    with fh:
        meta, arrays = _load(fh)
        try:
            yield meta, arrays
        finally:
            arrays.npz.close()


def move_aside(path: str, now: float) -> str:
    """Keep a corrupt checkpoint for inspection, out of the way of the next start."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    target = f"{path}.corrupt-{stamp}"
    os.replace(path, target)
    return target
