"""Checkpoint encoding and atomic writes.

One file holds the file offsets and the aggregates as of exactly those offsets, so a
restart resumes with neither a line counted twice nor one lost. The format is a magic
line, an uncompressed .npz (a zip of .npy arrays, loaded with allow_pickle=False: no
code runs on load) with a JSON metadata member, and a BLAKE2b digest of the two as a
trailer; `version` guards the layout. The digest turns any corruption (a torn or
flipped byte that zip's own checks may miss) into one clear error instead of wrong
state. It is a trailer so that the file streams to disk in one pass: the state can be
tens of MB (count windows), and a copy of it in memory would double the peak.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from monitor.errors import MonitorError

VERSION = 1
FILENAME = "checkpoint.npz"
META = "__meta__"
MAGIC = b"drift-monitor checkpoint\n"
DIGEST_BYTES = 32


class CheckpointError(MonitorError):
    """A checkpoint that cannot be read: corrupt, truncated or from an unknown version."""


class _HashingWriter:
    """Passes writes on to `sink`, hashing them (zipfile streams to it, unseekable)."""

    def __init__(self, sink: Callable[[bytes], object]) -> None:
        self.sink = sink
        self.hash = hashlib.blake2b(digest_size=DIGEST_BYTES)
        self.position = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.position += len(data)
        self.sink(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        """Every write already reached the sink."""

    def read(self, size: int = -1) -> bytes:
        # numpy takes an object with `read` for a file; zipfile only writes to it.
        raise io.UnsupportedOperation("write-only")


def _stream(sink: Callable[[bytes], object], meta: dict, arrays: dict[str, npt.NDArray]) -> None:
    payload = json.dumps({"version": VERSION, **meta}, separators=(",", ":")).encode()
    sink(MAGIC)
    writer = _HashingWriter(sink)
    np.savez(writer, **{META: np.frombuffer(payload, dtype=np.uint8)}, **arrays)  # type: ignore[arg-type]
    sink(writer.hash.digest())


def encode(meta: dict, arrays: dict[str, npt.NDArray]) -> bytes:
    """The bytes `write` puts on disk (for tests and tools)."""
    buf = io.BytesIO()
    _stream(buf.write, meta, arrays)
    return buf.getvalue()


def decode(data: bytes) -> tuple[dict, dict[str, npt.NDArray]]:
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + DIGEST_BYTES:
        raise CheckpointError("not a drift-monitor checkpoint")
    body, digest = data[len(MAGIC):-DIGEST_BYTES], data[-DIGEST_BYTES:]
    if hashlib.blake2b(body, digest_size=DIGEST_BYTES).digest() != digest:
        raise CheckpointError("checkpoint digest mismatch: the file is corrupt")
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        meta = json.loads(arrays.pop(META).tobytes())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, TypeError,
            NotImplementedError, RuntimeError) as exc:  # zipfile raises all of these
        raise CheckpointError(f"unreadable checkpoint: {exc}") from None
    if not isinstance(meta, dict) or meta.get("version") != VERSION:
        version = meta.get("version") if isinstance(meta, dict) else None
        raise CheckpointError(f"checkpoint version {version!r}, expected {VERSION}")
    return meta, arrays


def write(path: str, meta: dict, arrays: dict[str, npt.NDArray]) -> None:
    """Stream to a temp file, fsync, rename over `path`, fsync the folder: after a crash
    the file is either the old checkpoint or the new one, never a mix."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as fh:
        _stream(fh.write, meta, arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read(path: str) -> tuple[dict, dict[str, npt.NDArray]] | None:
    """The checkpoint at `path`, None when there is none; CheckpointError when corrupt."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return None
    return decode(data)


def move_aside(path: str, now: float) -> str:
    """Keep a corrupt checkpoint for inspection, out of the way of the next start."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    target = f"{path}.corrupt-{stamp}"
    os.replace(path, target)
    return target
