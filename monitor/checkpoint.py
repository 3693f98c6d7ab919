"""Checkpoint encoding and atomic writes.

One file holds the file offsets and the aggregates as of exactly those offsets, so a
restart resumes with neither a line counted twice nor one lost. The format is a magic
line, a BLAKE2b digest of the rest, then an uncompressed .npz (a zip of .npy arrays,
loaded with allow_pickle=False: no code runs on load) with a JSON metadata member;
`version` guards the layout. The digest turns any corruption (a torn or flipped byte
that zip's own checks may miss) into one clear error instead of wrong state.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile

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


def encode(meta: dict, arrays: dict[str, npt.NDArray]) -> bytes:
    buf = io.BytesIO()
    payload = json.dumps({"version": VERSION, **meta}, separators=(",", ":")).encode()
    np.savez(buf, **{META: np.frombuffer(payload, dtype=np.uint8)}, **arrays)
    body = buf.getvalue()
    return MAGIC + hashlib.blake2b(body, digest_size=DIGEST_BYTES).digest() + body


def decode(data: bytes) -> tuple[dict, dict[str, npt.NDArray]]:
    head = len(MAGIC) + DIGEST_BYTES
    if not data.startswith(MAGIC) or len(data) < head:
        raise CheckpointError("not a drift-monitor checkpoint")
    body = data[head:]
    if hashlib.blake2b(body, digest_size=DIGEST_BYTES).digest() != data[len(MAGIC):head]:
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


def write_atomic(path: str, data: bytes) -> None:
    """Write, fsync, rename over `path`, fsync the folder: after a crash the file is
    either the old checkpoint or the new one, never a mix."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
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
