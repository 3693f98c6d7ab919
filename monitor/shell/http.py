"""/metrics, /healthz and /readyz: an HTTP/1.1 server that slow clients cannot starve,
with TLS and basic auth from an exporter-toolkit web config.

One thread (`http`) owns every connection that is not being answered: it accepts, runs
TLS handshakes and reads request heads, all non-blocking under one selector, so an idle
or half-sent connection costs a descriptor and a small buffer, never a thread, and is
closed at its deadline. Only a complete request head goes to one of `max_requests`
worker threads (node_exporter's --web.max-requests); past that many in flight, 503. At
`max_connections` the connection waiting longest is closed to make room, so a fresh
scrape is always read. The handlers only read: `render` reads the daemon's current
immutable Snapshot, and health comes from two callables.

The web config (and the certificates it names) is checked for changes every second by
the same thread and swapped whole; a bad new version is logged and the old one serves.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ctypes
import email.utils
import hashlib
import http.client
import io
import ipaddress
import logging
import os
import queue
import re
import resource
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import bcrypt

from monitor.core.errors import ConfigError, ConfigErrors
from monitor.shell.spool import Ingest
from monitor.shell.webconfig import TLSServerConfig, WebConfig, load_web_config

log = logging.getLogger(__name__)

MAX_REQUESTS = 40  # requests answered at once (node_exporter's --web.max-requests)
MAX_CONNECTIONS = 512  # open connections (at most half of RLIMIT_NOFILE); at the cap the
# one waiting longest is closed
READ_TIMEOUT_S = 10.0  # from connect (or the first byte of a request) to its whole head
IDLE_TIMEOUT_S = 120.0  # a kept-alive connection with no request (Prometheus scrapes reuse it)
WRITE_TIMEOUT_S = 10.0  # to hand one response to a client that does not read
MAX_REQUEST_LINE = 8192  # longer: 414
MAX_HEAD_BYTES = 65536  # request line and headers together; longer: 431
LISTEN_BACKLOG = 1024
RELOAD_CHECK_S = 1.0
ACCEPT_PAUSE_S = 0.2  # after accept() failed for want of descriptors
AUTH_CACHE_SIZE = 100  # successful and failed (user, hash, password) checks, as exporter-toolkit
# A valid bcrypt hash (of "fakepassword", exporter-toolkit's) checked for unknown users,
# so that the time taken does not tell which user names exist.
_FAKE_HASH = b"$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_VERIFY = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
           "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}


class Throttle(Protocol):
    def allow(self, key: object) -> int | None: ...


# -- TLS and basic auth from a web config ---------------------------------------------


@dataclass(frozen=True)
class Web:
    """A web config version ready to serve: the TLS context built from its files."""

    config: WebConfig
    context: ssl.SSLContext | None
    fingerprint: tuple[object, ...]

    @property
    def protected(self) -> bool:
        return self.context is not None or bool(self.config.users)


def fingerprint(paths: tuple[str, ...]) -> tuple[object, ...]:
    """What identifies the current content of each file without reading it."""
    out: list[object] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns))
    return tuple(out)


def load_web(path: str) -> Web:
    """Read the web config at `path` and the certificates it names; ConfigErrors with the
    file and key path of every problem."""
    try:
        # Stamped before reading: a change made while we read is seen at the next check.
        stamp = fingerprint((os.path.abspath(path),))
        config = load_web_config(path)
        stamp += fingerprint(config.files()[1:])
        context = None if config.tls is None else server_context(config.tls)
    except ConfigErrors as exc:
        raise ConfigErrors([ConfigError(f"{path}: {e.path}" if e.path != path else path,
                                        str(e)[len(e.path) + 2:]) for e in exc.errors]) from None
    return Web(config, context, stamp)


def server_context(tls: TLSServerConfig) -> ssl.SSLContext:
    """An SSLContext for the server side of `tls`, or ConfigErrors naming the key."""
    path = "tls_server_config"
    errors: list[ConfigError] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _TLS_VERSIONS[tls.min_version]
    context.maximum_version = _TLS_VERSIONS[tls.max_version]
    for key, file in (("cert_file", tls.cert_file), ("key_file", tls.key_file),
                      ("client_ca_file", tls.client_ca_file)):
        if file is None:
            continue
        try:
            with open(file, "rb"):
                pass
        except OSError as exc:
            errors.append(ConfigError(f"{path}.{key}", f"cannot read {file}: {exc.strerror}"))
    if errors:
        raise ConfigErrors(errors)
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except ssl.SSLError as exc:
        errors.append(ConfigError(f"{path}.key_file", "not a PEM key matching cert_file "
                                  f"{tls.cert_file}: {exc.reason or exc}"))
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except ssl.SSLError as exc:
            errors.append(ConfigError(f"{path}.client_ca_file",
                                      f"not PEM certificates: {exc.reason or exc}"))
    if tls.client_auth_type == "RequireAnyClientCert":
        try:
            _require_any_client_certificate(context)
        except OSError as exc:
            errors.append(ConfigError(f"{path}.client_auth_type", str(exc)))
    else:
        context.verify_mode = _VERIFY[tls.client_auth_type]
    if tls.cipher_suites:
        with contextlib.suppress(ssl.SSLError):  # none available: reported below, by name
            context.set_ciphers(":".join(tls.cipher_suites))
        available = {c["name"] for c in context.get_ciphers()}
        missing = [name for name in tls.cipher_suites if name not in available]
        if missing:
            errors.append(ConfigError(f"{path}.cipher_suites",
                                      f"not available in this OpenSSL: {', '.join(missing)}"))
    if tls.curve is not None:
        context.set_ecdh_curve(tls.curve)
    if not tls.prefer_server_cipher_suites:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if errors:
        raise ConfigErrors(errors)
    return context


# RequireAnyClientCert (Go's tls.RequireAnyClientCert) asks for a client certificate and
# accepts any, unverified. Python's ssl has no verify callback, so set OpenSSL's
# SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT with a callback that accepts every
# certificate on the SSL_CTX directly. The SSL_CTX pointer is the first field after
# PyObject_HEAD of CPython's PySSLContext; it is checked against the verify mode Python
# itself set before anything is written, so another layout fails with an error instead.
_SSL_VERIFY_PEER, _SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 1, 2
_VERIFY_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_ACCEPT_ANY = _VERIFY_CALLBACK(lambda preverify_ok, store: 1)


def _require_any_client_certificate(context: ssl.SSLContext) -> None:
    import _ssl

    libssl = ctypes.CDLL(_ssl.__file__)
    libssl.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
    libssl.SSL_CTX_get_verify_mode.restype = ctypes.c_int
    libssl.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CALLBACK]
    head = ctypes.sizeof(ctypes.c_ssize_t) + ctypes.sizeof(ctypes.c_void_p)
    ctx = ctypes.c_void_p.from_address(id(context) + head).value
    context.verify_mode = ssl.CERT_OPTIONAL
    if not ctx or libssl.SSL_CTX_get_verify_mode(ctx) != _SSL_VERIFY_PEER:
        raise OSError("RequireAnyClientCert is not available with this Python's ssl module; "
                      "use RequireAndVerifyClientCert")
    libssl.SSL_CTX_set_verify(ctx, _SSL_VERIFY_PEER | _SSL_VERIFY_FAIL_IF_NO_PEER_CERT, _ACCEPT_ANY)


class Authenticator:
    """Basic auth against bcrypt hashes. A bcrypt check costs tens of milliseconds by
    design, so, as exporter-toolkit does, results are cached by (user, hash, password)
    digest, and one check runs at a time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bcrypt_lock = threading.Lock()
        self.cache: dict[bytes, bool] = {}

    def allows(self, users: tuple[tuple[str, bytes], ...], authorization: str | None) -> bool:
        if authorization is None or not authorization.startswith("Basic "):
            return False
        try:
            user, sep, password = base64.b64decode(authorization[6:].strip(),
                                                   validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        known = dict(users)
        hashed = known.get(user, _FAKE_HASH)
        secret = password.encode()
        key = hashlib.sha256(b"\0".join((user.encode(), hashed, secret))).digest()
        with self.lock:
            ok = self.cache.get(key)
        if ok is None:
            with self.bcrypt_lock:
                try:
                    ok = bcrypt.checkpw(secret, hashed)
                except ValueError:  # longer than bcrypt's 72 bytes: never a match
                    ok = False
            with self.lock:
                if len(self.cache) >= AUTH_CACHE_SIZE:
                    for old in list(self.cache)[: AUTH_CACHE_SIZE // 10]:
                        del self.cache[old]
                self.cache[key] = ok
        return bool(sep) and ok and user in known


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the server -----------------------------------------------------------------------


class _Connection:
    """A client connection; owned by the selector thread, or by one worker while it
    answers a request."""

    __slots__ = ("buffer", "deadline", "handshaking", "since", "sock")

    def __init__(self, sock: socket.socket, now: float, handshaking: bool) -> None:
        self.sock = sock
        self.buffer = b""
        self.deadline = now + READ_TIMEOUT_S
        self.handshaking = handshaking
        self.since = now


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
            413: "Content Too Large", 414: "URI Too Long", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}


def response(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
             headers: tuple[tuple[str, str], ...] = (), head_only: bool = False,
             close: bool = False) -> bytes:
    """The bytes of one HTTP/1.1 response (the body left out for HEAD)."""
    lines = [f"HTTP/1.1 {status} {_REASONS[status]}", "Server: drift-monitor",
             f"Date: {email.utils.formatdate(usegmt=True)}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers)]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


class MetricsServer:
    def __init__(
        self,
        host: str,
        port: int,
        render: Callable[[str | None], tuple[bytes, str]],
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
        throttle: Throttle,
        web: Web | None = None,
        max_requests: int = MAX_REQUESTS,
        monotonic: Callable[[], float] = time.monotonic,
        ingest: Ingest | None = None,
    ) -> None:
        self.render = render
        self.ingest = ingest
        self.routes: dict[str, Callable[[str | None], tuple[int, bytes, str]]] = {
            "/metrics": self._metrics,
            "/healthz": lambda accept: _status(healthy()),
            "/readyz": lambda accept: _status(ready()),
        }
        self.throttle = throttle
        self.web = web
        self.monotonic = monotonic
        self.auth = Authenticator()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            # A restarted daemon binds `listen` at once.
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((host, port))
            self.listener.listen(LISTEN_BACKLOG)
        except OSError:
            self.listener.close()
            raise
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.connections: dict[_Connection, None] = {}
        self.returned: queue.SimpleQueue[_Connection] = queue.SimpleQueue()
        self.jobs: queue.SimpleQueue[tuple[_Connection, bytes] | None] = queue.SimpleQueue()
        self.slots = threading.BoundedSemaphore(max_requests)
        self.stopping = False
        self.next_reload_check = 0.0
        self.next_expiry = 0.0
        self.accept_resumes: float | None = None
        # Half the descriptors at most, so that log files and checkpoints always get one.
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.max_connections = (MAX_CONNECTIONS if soft == resource.RLIM_INFINITY
                                else min(MAX_CONNECTIONS, soft // 2))
        self.failed_reload = ""
        self.thread = threading.Thread(target=self._loop, name="http", daemon=True)
        self.workers = [threading.Thread(target=self._work, name=f"http-{i}", daemon=True)
                        for i in range(max_requests)]
        if not is_loopback(host) and (web is None or not web.protected):
            log.warning("listening on a non-loopback address without TLS or basic auth "
                        "host=%s: whoever reaches the port reads every metric; set "
                        "web_config_file", host)

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def start(self) -> None:
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.thread.start()
        for worker in self.workers:
            worker.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop serving within about `timeout_s`: a worker still writing to a client that
        does not read is left to its write timeout (the threads are daemonic)."""
        deadline = self.monotonic() + timeout_s
        self.stopping = True
        if self.thread.ident is not None:  # started (start-up may fail before)
            self._wake()
            self.thread.join(timeout=timeout_s)
            for _ in self.workers:
                self.jobs.put(None)
            for worker in self.workers:
                worker.join(timeout=max(0.0, deadline - self.monotonic()))
        for conn in list(self.connections):
            self._close(conn)
        while True:
            try:
                self.returned.get_nowait().sock.close()
            except queue.Empty:
                break
        self.selector.close()
        self.listener.close()
        self.wake_r.close()
        self.wake_w.close()

    # -- the selector thread ----------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a wake-up is pending already
            self.wake_w.send(b"\0")

    def _loop(self) -> None:
        while not self.stopping:
            for key, _ in self.selector.select(timeout=0.5):
                if key.data == "accept":
                    self._accept()
                elif key.data == "wake":
                    self._take_returned()
                else:
                    self._readable(key.data)
            now = self.monotonic()
            if now >= self.next_expiry:  # a scan over every connection, a few times a second
                self.next_expiry = now + 0.25
                for conn in [c for c in self.connections if c.deadline <= now]:
                    self._close(conn)
            if self.accept_resumes is not None and now >= self.accept_resumes:
                self.accept_resumes = None
                self.selector.register(self.listener, selectors.EVENT_READ, "accept")
            if now >= self.next_reload_check:
                self.next_reload_check = now + RELOAD_CHECK_S
                self._check_web_config()

    def _accept(self) -> None:
        for _ in range(64):  # then serve the others before accepting more
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Out of descriptors (EMFILE, ENFILE): free the one of the connection
                # waiting longest; with none to free, the listener stays readable, so stop
                # watching it for a moment instead of spinning.
                self._note("accept failed", exc)
                if self.connections:
                    self._close(min(self.connections, key=lambda c: c.since))
                    continue
                self.selector.unregister(self.listener)
                self.accept_resumes = self.monotonic() + ACCEPT_PAUSE_S
                return
            sock.setblocking(False)
            now = self.monotonic()
            if len(self.connections) >= self.max_connections:
                self._close(min(self.connections, key=lambda c: c.since))
            context = None if self.web is None else self.web.context
            if context is not None:
                try:
                    sock = context.wrap_socket(sock, server_side=True,
                                               do_handshake_on_connect=False)
                except OSError as exc:  # reset before we got to it
                    self._note("tls setup failed", exc)
                    sock.close()
                    continue
            conn = _Connection(sock, now, handshaking=context is not None)
            self.connections[conn] = None
            self.selector.register(sock, selectors.EVENT_READ, conn)

    def _take_returned(self) -> None:
        try:
            while self.wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                conn = self.returned.get_nowait()
            except queue.Empty:
                return
            if self.stopping:
                conn.sock.close()
                continue
            now = self.monotonic()
            conn.since = now
            conn.deadline = now + (READ_TIMEOUT_S if conn.buffer else IDLE_TIMEOUT_S)
            self.connections[conn] = None
            self.selector.register(conn.sock, selectors.EVENT_READ, conn)
            self._maybe_dispatch(conn)  # a pipelined request may be waiting already

    def _readable(self, conn: _Connection) -> None:
        sock = conn.sock
        if conn.handshaking:
            assert isinstance(sock, ssl.SSLSocket)
            try:
                sock.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except (ssl.SSLError, OSError) as exc:
                self._note("tls handshake failed", exc)
                self._close(conn)
                return
            conn.handshaking = False
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError as exc:
                self._note("read failed", exc)
                self._close(conn)
                return
            if not data:
                self._close(conn)
                return
            if not conn.buffer:  # a request starts: it has READ_TIMEOUT_S to arrive whole
                conn.deadline = min(conn.deadline, self.monotonic() + READ_TIMEOUT_S)
            conn.buffer += data
            if len(conn.buffer) > MAX_HEAD_BYTES:
                break
        self._maybe_dispatch(conn)

    def _maybe_dispatch(self, conn: _Connection) -> None:
        if len(conn.buffer) > MAX_REQUEST_LINE and b"\n" not in conn.buffer[:MAX_REQUEST_LINE]:
            self._refuse(conn, 414)
            return
        end = _HEAD_END.search(conn.buffer, 0, MAX_HEAD_BYTES + 4)
        if end is None:
            if len(conn.buffer) > MAX_HEAD_BYTES:
                self._refuse(conn, 431)
            return
        head, conn.buffer = conn.buffer[: end.end()], conn.buffer[end.end():]
        self.selector.unregister(conn.sock)
        del self.connections[conn]
        if not self.slots.acquire(blocking=False):
            self._refuse(conn, 503, registered=False)
            return
        self.jobs.put((conn, head))

    def _refuse(self, conn: _Connection, status: int, registered: bool = True) -> None:
        """A short answer from this thread (never blocking on the client), then close."""
        # The client may be gone or not reading: closing is all that is left then.
        with contextlib.suppress(OSError):
            conn.sock.send(response(status, f"{_REASONS[status]}\n".encode(), close=True))
        if registered:
            self._close(conn)
        else:
            conn.sock.close()

    def _close(self, conn: _Connection) -> None:
        if conn in self.connections:
            del self.connections[conn]
            self.selector.unregister(conn.sock)
        conn.sock.close()

    def _note(self, what: str, exc: BaseException) -> None:
        """Client-side failures are routine (scanners, timeouts, resets): one line now
        and then, counting the rest."""
        suppressed = self.throttle.allow(("http", what))
        if suppressed is not None:
            log.info("http client %s error=%s suppressed=%d", what, exc, suppressed)

    def _check_web_config(self) -> None:
        web = self.web
        if web is None or fingerprint(web.config.files()) == web.fingerprint:
            return
        try:
            new = load_web(web.config.path)
        except ConfigErrors as exc:
            text = str(exc)
            if text != self.failed_reload:  # once per bad version, not every second
                self.failed_reload = text
                for error in exc.errors:
                    log.error("web config rejected, keeping the running one: %s", error)
            return
        self.failed_reload = ""
        self.web = new
        log.info("web config reloaded path=%s tls=%s basic_auth_users=%d", new.config.path,
                 new.context is not None, len(new.config.users))

    # -- workers ----------------------------------------------------------------------

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            conn, head = job
            keep = False
            try:
                conn.sock.settimeout(WRITE_TIMEOUT_S)
                keep = self._answer(conn, head)
                if keep:
                    conn.sock.setblocking(False)
            except OSError as exc:  # reset, broken pipe, timeout: the client left
                self._note("write failed", exc)
                keep = False
            finally:
                self.slots.release()
            if keep:
                self.returned.put(conn)
                self._wake()
            else:
                conn.sock.close()

    def _answer(self, conn: _Connection, head: bytes) -> bool:
        """Answer one request; True to keep the connection for the next."""
        sock = conn.sock
        web = self.web
        extra = () if web is None else web.config.headers
        line, _, rest = head.partition(b"\n")
        parts = line.rstrip(b"\r").decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            sock.sendall(response(400, b"Bad Request\n", headers=extra, close=True))
            return False
        method, target, version = parts
        try:
            headers = http.client.parse_headers(io.BytesIO(rest))
        except http.client.HTTPException:  # more than 100 headers
            sock.sendall(response(431, b"Request Header Fields Too Large\n", headers=extra,
                                  close=True))
            return False
        connection = headers.get("Connection", "").lower()
        keep = (connection != "close" if version == "HTTP/1.1" else connection == "keep-alive")
        path = target.split("?", 1)[0]
        limit = None if self.ingest is None else self.ingest.max_body(path)
        # A body we do not read would be taken for the next request: close after this one.
        if limit is None and (headers.get("Transfer-Encoding")
                              or headers.get("Content-Length", "0") != "0"):
            keep = False
        allowed = ("GET", "HEAD") if limit is None else ("POST",)
        if method not in allowed:
            sock.sendall(response(405, b"Method Not Allowed\n",
                                  headers=(*extra, ("Allow", ", ".join(allowed))), close=True))
            return False
        route = self.routes.get(path)
        public = path in ("/healthz", "/readyz")
        if not public and web is not None and web.config.users and not self.auth.allows(
                web.config.users, headers.get("Authorization")):
            status, body, ctype = 401, b"Unauthorized\n", "text/plain; charset=utf-8"
            extra = (*extra, ("WWW-Authenticate", 'Basic realm="drift-monitor", charset="UTF-8"'))
            keep = keep and limit is None  # an unread POST body would be the next request
        elif limit is not None:
            return self._ingest(conn, path, headers, limit, extra, keep)
        elif route is None:
            status, body, ctype = 404, b"try /metrics, /healthz or /readyz\n", "text/plain"
        else:
            try:
                status, body, ctype = route(headers.get("Accept"))
            except Exception:
                # A bug in rendering must not kill the worker; the daemon keeps running.
                log.exception("rendering %s failed", path)
                status, body, ctype = 500, b"Internal Server Error\n", "text/plain"
        sock.sendall(response(status, body, ctype, extra, head_only=method == "HEAD",
                              close=not keep))
        return keep

    def _ingest(self, conn: _Connection, path: str, headers: http.client.HTTPMessage, limit: int,
                extra: tuple[tuple[str, str], ...], keep: bool) -> bool:
        """A POST to an http_sources route: read its body (bounded in size and time),
        hand it to the spool, answer what the spool says. True to keep the connection."""
        assert self.ingest is not None
        sock = conn.sock
        length = headers.get("Content-Length", "")
        if headers.get("Transfer-Encoding") or not length.isdigit():
            sock.sendall(response(411, b"Length Required\n", headers=extra, close=True))
            return False
        size = int(length)
        if size > limit:  # the body is never read
            sock.sendall(response(413, b"body larger than max_spool_bytes\n", headers=extra,
                                  close=True))
            return False
        body, conn.buffer = conn.buffer[:size], conn.buffer[size:]
        deadline = self.monotonic() + READ_TIMEOUT_S
        while len(body) < size:
            sock.settimeout(max(deadline - self.monotonic(), 0.001))
            try:
                data = sock.recv(min(size - len(body), 1 << 20))
            except TimeoutError:
                data = b""
            if not data:  # the client left or stalled: nothing half-sent is spooled
                with contextlib.suppress(OSError):
                    sock.sendall(response(408, b"Request Timeout\n", headers=extra, close=True))
                return False
            body += data
        sock.settimeout(WRITE_TIMEOUT_S)
        lowered = {key.lower(): value for key, value in headers.items()}
        answer = self.ingest.handle(path, lowered, body)
        sock.sendall(response(answer.status, answer.body, answer.headers.get(
            "Content-Type", "application/json"), (*extra, *(
                (k, v) for k, v in answer.headers.items() if k != "Content-Type")),
            close=not keep))
        return keep

    def _metrics(self, accept: str | None) -> tuple[int, bytes, str]:
        body, content_type = self.render(accept)
        return 200, body, content_type


def _status(ok: bool) -> tuple[int, bytes, str]:
    """Health answers say ok or not ready, nothing more (they need no credentials)."""
    return (200, b"ok\n", "text/plain") if ok else (503, b"not ready\n", "text/plain")
