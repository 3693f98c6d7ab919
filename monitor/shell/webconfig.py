"""The Prometheus exporter-toolkit web configuration (`--web.config.file`), validated into
frozen values.

The format and its defaults are exporter-toolkit's (web/tls_config.go, docs/
web-configuration.md), so a file written for node_exporter works here. Keys of that
format this daemon cannot honour with Python's `ssl` are errors naming the key, never
silently ignored. Relative paths are resolved against the web config's own folder.
Building the `ssl.SSLContext` (reading the certificates) is the shell's job (http.py).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from monitor.core.errors import ConfigErrors
from monitor.shell.config import KeyReader, choice, key_path, non_empty_string, read_yaml, resolve_path

CLIENT_AUTH_TYPES = ("NoClientCert", "RequireAnyClientCert", "VerifyClientCertIfGiven",
                     "RequireAndVerifyClientCert")
TLS_VERSIONS = ("TLS12", "TLS13")
# Go's names (crypto/tls CipherSuites(), the IANA names) -> OpenSSL's names. The TLS 1.3
# suites are accepted and, as in Go, not configurable: OpenSSL enables all three.
CIPHER_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
# Go's curve names -> OpenSSL's. Python's ssl sets one ECDH curve (set_ecdh_curve), and
# only a NIST one: a list of several, or X25519, is an error rather than a silent change.
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1"}
GO_CURVES = (*CURVES, "X25519")
# exporter-toolkit's extraHTTPHeaders: the headers that may be set, and the values of the
# enumerated ones.
HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}
# Keys of exporter-toolkit's format that drift-monitor does not implement, and why.
UNSUPPORTED = {
    "tls_server_config.cert": "inline certificates are not supported: use cert_file",
    "tls_server_config.key": "inline keys are not supported: use key_file",
    "tls_server_config.client_ca": "an inline client CA is not supported: use client_ca_file",
    "tls_server_config.client_allowed_sans": "not supported: issue client certificates from "
                                             "a CA used for this purpose only",
    "http_server_config.http2": "not supported: drift-monitor serves HTTP/1.1",
    "rate_limit": "not supported: the server bounds concurrent requests instead",
}
MAX_WEB_CONFIG_BYTES = 1 << 20  # a web config is a few lines; refuse to parse a huge one
_BCRYPT = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")


@dataclass(frozen=True, slots=True)
class TLSServerConfig:
    """tls_server_config, paths absolute; cipher suites and curves by OpenSSL's names."""

    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: str | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: tuple[str, ...] = ()
    curve: str | None = None
    prefer_server_cipher_suites: bool = True


@dataclass(frozen=True, slots=True)
class WebConfig:
    """One version of the web config file at `path`. No `tls`: plain HTTP; no `users`:
    no basic auth. `users` maps a name to its bcrypt hash."""

    path: str
    tls: TLSServerConfig | None = None
    users: tuple[tuple[str, bytes], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    def files(self) -> tuple[str, ...]:
        """Every file this version was built from: a change to any means re-read."""
        if self.tls is None:
            return (self.path,)
        extra = () if self.tls.client_ca_file is None else (self.tls.client_ca_file,)
        return (self.path, self.tls.cert_file, self.tls.key_file, *extra)


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _names(reader: KeyReader, raw: object, path: str, known: tuple[str, ...]) -> tuple[str, ...]:
    if not isinstance(raw, list):
        reader.fail(path, "expected a list of names")
        return ()
    for i, name in enumerate(raw):
        if name not in known:
            reader.fail(f"{path}[{i}]", f"unknown name {name!r} (known: {', '.join(known)})")
    return tuple(str(n) for n in raw if n in known)


def _tls(reader: KeyReader, raw: object, base_dir: str) -> TLSServerConfig | None:
    path = "tls_server_config"
    keys = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version",
            "max_version", "cipher_suites", "curve_preferences", "prefer_server_cipher_suites",
            "cert", "key", "client_ca", "client_allowed_sans"}
    data = reader.mapping(raw, path, keys)
    for key in ("cert", "key", "client_ca", "client_allowed_sans"):
        if key in data:
            reader.fail(key_path(path, key), UNSUPPORTED[key_path(path, key)])
    # As exporter-toolkit's IsEnabled: any of these set means TLS is wanted.
    if not {"cert_file", "key_file", "client_auth_type", "client_ca_file"} & data.keys():
        return None
    files = {}
    for key in ("cert_file", "key_file"):
        if key not in data:
            reader.fail(key_path(path, key), "required when TLS is configured")
        files[key] = resolve_path(reader.get(data, key, path, non_empty_string, "?"), base_dir)
    auth = reader.get(data, "client_auth_type", path, choice(*CLIENT_AUTH_TYPES),
                      "NoClientCert")
    ca = reader.get(data, "client_ca_file", path, non_empty_string, None)
    if ca is not None and auth == "NoClientCert":
        reader.fail(key_path(path, "client_ca_file"),
                    "client CA configured without a client_auth_type that uses it")
    if ca is None and auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
        reader.fail(key_path(path, "client_ca_file"), f"required with client_auth_type {auth}")
    low = reader.get(data, "min_version", path, choice(*TLS_VERSIONS), "TLS12")
    high = reader.get(data, "max_version", path, choice(*TLS_VERSIONS), "TLS13")
    if TLS_VERSIONS.index(low) > TLS_VERSIONS.index(high):
        reader.fail(key_path(path, "max_version"), f"{high} is below min_version {low}")
    suites: tuple[str, ...] = ()
    if "cipher_suites" in data:
        names = _names(reader, data["cipher_suites"], key_path(path, "cipher_suites"),
                       (*CIPHER_SUITES, *TLS13_SUITES))
        suites = tuple(CIPHER_SUITES[n] for n in names if n in CIPHER_SUITES)
    curve = None
    if "curve_preferences" in data:
        cpath = key_path(path, "curve_preferences")
        curves = _names(reader, data["curve_preferences"], cpath, GO_CURVES)
        if len(curves) > 1 or "X25519" in curves:
            reader.fail(cpath, "Python's ssl can set one curve only, one of "
                               f"{', '.join(CURVES)}; got {list(curves)}")
        elif curves:
            curve = CURVES[curves[0]]
    return TLSServerConfig(
        cert_file=files["cert_file"],
        key_file=files["key_file"],
        client_auth_type=auth,
        client_ca_file=None if ca is None else resolve_path(ca, base_dir),
        min_version=low,
        max_version=high,
        cipher_suites=suites,
        curve=curve,
        prefer_server_cipher_suites=reader.get(data, "prefer_server_cipher_suites", path,
                                               _bool, True),
    )


def _users(reader: KeyReader, raw: object) -> tuple[tuple[str, bytes], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        reader.fail("basic_auth_users", "expected a mapping of user name to bcrypt hash")
        return ()
    users = []
    for name, hashed in raw.items():
        upath = key_path("basic_auth_users", str(name))
        if not isinstance(name, str) or not name or ":" in name:
            reader.fail(upath, "a user name is a non-empty string without ':'")
        elif not isinstance(hashed, str) or not _BCRYPT.match(hashed):
            reader.fail(upath, "expected a bcrypt hash ($2y$10$ and 53 more characters, "
                               "as `htpasswd -nBC 10 \"\" | tr -d ':\\n'` prints)")
        else:
            users.append((name, hashed.encode()))
    return tuple(users)


def _headers(reader: KeyReader, raw: object) -> tuple[tuple[str, str], ...]:
    path = "http_server_config.headers"
    data = reader.mapping(raw, path, set(HEADERS))
    headers = []
    for name, value in data.items():
        hpath = key_path(path, name)
        allowed = HEADERS[name]
        if not isinstance(value, str) or not (value.isascii() and value.isprintable()):
            reader.fail(hpath, "expected a string of printable ASCII on one line")
        elif allowed and value not in allowed:
            reader.fail(hpath, f"expected one of {', '.join(allowed)}, got {value!r}")
        elif value:  # blank means unset, as in exporter-toolkit
            headers.append((name, value))
    return tuple(headers)


def build_web_config(raw: object, path: str) -> WebConfig:
    """Validate a parsed web config document read from `path`; raise ConfigErrors listing
    every problem, each at its key path."""
    reader = KeyReader()
    data = reader.mapping(raw, "", {"tls_server_config", "basic_auth_users",
                                    "http_server_config", "rate_limit"})
    if "rate_limit" in data:
        reader.fail("rate_limit", UNSUPPORTED["rate_limit"])
    base_dir = os.path.dirname(os.path.abspath(path))
    tls = _tls(reader, data.get("tls_server_config"), base_dir)
    users = _users(reader, data.get("basic_auth_users"))
    server = reader.mapping(data.get("http_server_config"), "http_server_config",
                            {"headers", "http2"})
    if "http2" in server:
        reader.fail("http_server_config.http2", UNSUPPORTED["http_server_config.http2"])
    headers = _headers(reader, server.get("headers"))
    if reader.errors:
        raise ConfigErrors(reader.errors)
    return WebConfig(path=os.path.abspath(path), tls=tls, users=users, headers=headers)


def load_web_config(path: str) -> WebConfig:
    """Read and validate a web config file (certificates are read by http.py)."""
    return build_web_config(read_yaml(path, MAX_WEB_CONFIG_BYTES), path)
