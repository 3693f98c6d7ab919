"""Real X.509 certificates for the TLS tests, made with the `openssl` command line tool:
a CA, server certificates for 127.0.0.1, client certificates signed by the CA or not."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def _openssl(*args: str | Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.skip("openssl not found: install the Debian package openssl")
    subprocess.run([binary, *map(str, args)], check=True, capture_output=True, timeout=60)


def _key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)


def self_signed(folder: Path, name: str, ca: bool = False) -> Pair:
    """A self-signed certificate (a CA with `ca`), valid for a day."""
    pair = Pair(folder / f"{name}.crt", folder / f"{name}.key")
    _key(pair.key)
    ext = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign"] if ca else []
    _openssl("req", "-x509", "-new", "-key", pair.key, "-out", pair.cert, "-days", "1",
             "-subj", f"/CN={name}", *ext)
    return pair


def signed(folder: Path, name: str, ca: Pair, server: bool) -> Pair:
    """A certificate signed by `ca`: for a server at 127.0.0.1/localhost, or a client."""
    pair = Pair(folder / f"{name}.crt", folder / f"{name}.key")
    _key(pair.key)
    csr = folder / f"{name}.csr"
    _openssl("req", "-new", "-key", pair.key, "-out", csr, "-subj", f"/CN={name}")
    ext = folder / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
                   if server else "extendedKeyUsage=clientAuth\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial",
             "-out", pair.cert, "-days", "1", "-extfile", ext)
    return pair
