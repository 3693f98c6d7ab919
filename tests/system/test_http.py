"""The HTTP server of a real daemon: methods, limits, slow and vanishing clients, TLS with
real certificates for every client_auth_type, basic auth, and web config reloads."""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import resource
import socket
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path

import bcrypt
import pytest
import yaml

from monitor.shell.http import MAX_REQUESTS, READ_TIMEOUT_S
from tests.certs import Pair, self_signed, signed
from tests.system.conftest import append, model_config, parse_metrics, run_cli, source, value
from tests.waiting import wait_until

PASSWORD = "s3cret pass"


def request(port: int, path: str = "/metrics", method: str = "GET",
            context: ssl.SSLContext | None = None, auth: tuple[str, str] | None = None,
            timeout_s: float = 5) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection: status, headers (lower-case names), body."""
    conn: http.client.HTTPConnection
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=timeout_s)
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def client_context(ca: Pair, cert: Pair | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.cert))
    if cert is not None:
        context.load_cert_chain(str(cert.cert), str(cert.key))
    return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pair]:
    folder = tmp_path_factory.mktemp("pki")
    ca = self_signed(folder, "ca", ca=True)
    return {"ca": ca, "server": signed(folder, "server", ca, server=True),
            "client": signed(folder, "client", ca, server=False),
            "stranger": self_signed(folder, "stranger")}


def write_web(path: Path, web: dict) -> Path:
    path.write_text(yaml.safe_dump(web))
    return path


def daemon_config(logs: Path, **extra: object) -> dict:
    append(logs / "p-1.jsonl", [{"ts": time.time(), "probs": [0.2, 0.8], "label": 1}])
    return {"sources": [source(logs / "p-*.jsonl")], "models": {"fraud": model_config()}, **extra}


def wait_ready(d, context: ssl.SSLContext | None = None, auth=None) -> None:  # type: ignore[no-untyped-def]
    def ready() -> bool:
        if d.proc.poll() is not None:
            raise AssertionError(f"daemon exited {d.proc.returncode}: {d.log()}")
        try:
            return request(d.port, "/metrics", context=context, auth=auth)[0] == 200
        except OSError:
            return False

    wait_until(ready, 30, what="the daemon to answer /metrics")


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


# -- plain HTTP -------------------------------------------------------------------------


def test_head_is_answered_other_methods_get_405_and_no_python_version_shows(daemon_factory, logs):
    d = daemon_factory(daemon_config(logs)).start()
    status, headers, body = request(d.port, method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 100
    assert headers["server"] == "drift-monitor"
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        status, headers, _ = request(d.port, method=method)
        assert status == 405, method
        assert headers["allow"] == "GET, HEAD"
        assert "python" not in headers["server"].lower()
    assert request(d.port, "/nowhere")[0] == 404
    assert d.stop() == 0


def raw_exchange(port: int, data: bytes, timeout_s: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def test_oversized_request_line_gets_414_and_oversized_headers_431(daemon_factory, logs):
    d = daemon_factory(daemon_config(logs)).start()
    assert raw_exchange(d.port, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n").startswith(
        b"HTTP/1.1 414 ")
    assert raw_exchange(d.port, b"GET /metrics HTTP/1.1\r\n" + b"X-Big: " + b"b" * 70000 +
                        b"\r\n\r\n").startswith(b"HTTP/1.1 431 ")
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(150))
    assert raw_exchange(d.port, b"GET /metrics HTTP/1.1\r\n" + many + b"\r\n").startswith(
        b"HTTP/1.1 431 ")
    assert request(d.port)[0] == 200
    assert d.stop() == 0


def test_keep_alive_serves_several_requests_on_one_connection(daemon_factory, logs):
    d = daemon_factory(daemon_config(logs)).start()
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=5)
    for path in ("/metrics", "/healthz", "/metrics"):
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200 and response.read()
    conn.close()
    assert d.stop() == 0


def test_idle_and_half_sent_clients_never_delay_a_fresh_scrape(daemon_factory, logs):
    d = daemon_factory(daemon_config(logs)).start()
    assert d.proc is not None
    idle = [socket.create_connection(("127.0.0.1", d.port), timeout=5) for _ in range(500)]
    half = []
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
        half.append(sock)
    try:
        for _ in range(10):
            started = time.monotonic()
            status, _, body = request(d.port)
            elapsed = time.monotonic() - started
            assert status == 200 and b"model_drift_predictions_total" in body
            # Starved, it would wait for a read timeout (10 s) or for ever; 5 s is for load.
            assert elapsed < 5.0, f"a fresh scrape took {elapsed:.2f}s behind slow clients"
            assert request(d.port, "/healthz")[0] == 200
        # Connections cost no thread: the workers, the selector, the main loop, watchdog.
        assert threads_of(d.proc.pid) <= MAX_REQUESTS + 8
        # A half-sent request is dropped at its read timeout, not held for ever.
        half[0].settimeout(READ_TIMEOUT_S + 20)
        started = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            assert half[0].recv(1) == b""
        assert time.monotonic() - started < READ_TIMEOUT_S + 15
    finally:
        for sock in idle + half:
            sock.close()
    assert d.stop() == 0


@pytest.mark.parametrize("when", ["before start", "after start"])
def test_a_descriptor_flood_neither_stops_scrapes_nor_ingestion(daemon_factory, logs, when):
    """Under a low descriptor limit (systemd's default soft limit is 1024), more idle
    connections than descriptors: set before start, the daemon keeps half of them for
    its files; lowered under its feet, it frees the longest-waiting connection's."""
    d = daemon_factory(daemon_config(logs))
    limit = 128
    if when == "before start":
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        try:
            d.start()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    else:
        d.start()
        assert d.proc is not None
        resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE, (limit, limit))
    flood = [socket.create_connection(("127.0.0.1", d.port), timeout=5) for _ in range(2 * limit)]
    try:
        append(logs / "p-1.jsonl", [{"ts": time.time(), "probs": [0.5, 0.5], "label": 0}] * 3)
        for _ in range(5):
            started = time.monotonic()
            assert request(d.port)[0] == 200
            assert time.monotonic() - started < 5
        d.wait_value("model_drift_predictions_total", 4, timeout_s=15, model="fraud")
        if when == "before start":
            assert d.value("drift_monitor_checkpoint_failures_total") == 0
    finally:
        for sock in flood:
            sock.close()
    assert d.stop() == 0
    assert "Traceback" not in d.log()
    # Before start the cap keeps accept() from ever running out; after, it did and recovered.
    assert ("http client accept failed" in d.log()) == (when == "after start")


def test_clients_that_vanish_leave_no_traceback_and_at_most_a_throttled_line(daemon_factory, logs):
    d = daemon_factory(daemon_config(logs)).start()
    for _ in range(200):
        sock = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        # RST instead of FIN: the answer hits a closed socket (BrokenPipe / reset).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    assert request(d.port)[0] == 200
    assert d.stop() == 0
    text = d.log()
    assert "Traceback" not in text and "BrokenPipe" not in text.replace("suppressed", "")
    assert sum("http client" in line for line in text.splitlines()) <= 2


def test_non_loopback_listen_without_tls_or_auth_logs_one_warning(daemon_factory, logs):
    d = daemon_factory(daemon_config(logs))
    d.config["listen"] = f"0.0.0.0:{d.port}"
    d.write_config(d.config)
    d.start()
    assert d.stop() == 0
    assert d.log().count("listening on a non-loopback address without TLS or basic auth") == 1


# -- TLS and basic auth ----------------------------------------------------------------

# Which clients each client_auth_type lets in: none (no certificate), a certificate
# signed by the configured CA, a self-signed certificate of a stranger.
ADMITS = {
    "NoClientCert": {"none": True, "client": True, "stranger": True},
    "RequireAnyClientCert": {"none": False, "client": True, "stranger": True},
    "VerifyClientCertIfGiven": {"none": True, "client": True, "stranger": False},
    "RequireAndVerifyClientCert": {"none": False, "client": True, "stranger": False},
}


@pytest.mark.parametrize("auth_type", sorted(ADMITS))
def test_client_auth_type_admits_exactly_the_clients_it_should(daemon_factory, logs, tmp_path,
                                                               pki, auth_type):
    tls = {"cert_file": str(pki["server"].cert), "key_file": str(pki["server"].key),
           "client_auth_type": auth_type}
    if auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
        tls["client_ca_file"] = str(pki["ca"].cert)
    web = write_web(tmp_path / "web.yml", {"tls_server_config": tls})
    d = daemon_factory(daemon_config(logs, web_config_file=str(web))).start(wait_ready=False)
    wait_ready(d, client_context(pki["ca"], pki["client"]))
    for who, admitted in ADMITS[auth_type].items():
        context = client_context(pki["ca"], None if who == "none" else pki[who])
        if admitted:
            status, _, body = request(d.port, context=context)
            assert status == 200 and b"model_drift_predictions_total" in body, who
        else:
            with pytest.raises(OSError):
                request(d.port, context=context)
    with pytest.raises(OSError):  # plain HTTP on the TLS port gets nothing
        request(d.port)
    assert d.stop() == 0
    assert "Traceback" not in d.log()


def test_basic_auth_guards_metrics_but_not_health(daemon_factory, logs, tmp_path):
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    web = write_web(tmp_path / "web.yml", {"basic_auth_users": {"prometheus": hashed},
                                           "http_server_config": {"headers": {
                                               "X-Content-Type-Options": "nosniff"}}})
    d = daemon_factory(daemon_config(logs, web_config_file=str(web))).start()
    for auth in (None, ("prometheus", "wrong"), ("nobody", PASSWORD), ("prometheus", "")):
        status, headers, body = request(d.port, auth=auth)
        assert status == 401, auth
        assert headers["www-authenticate"].startswith("Basic")
        assert b"model_drift" not in body
    status, headers, body = request(d.port, auth=("prometheus", PASSWORD))
    assert status == 200 and value(parse_metrics(body.decode()), "model_drift_predictions_total",
                                   model="fraud") == 1
    assert headers["x-content-type-options"] == "nosniff"
    for path in ("/healthz", "/readyz"):
        status, _, body = request(d.port, path)
        assert (status, body) == (200, b"ok\n")
    # Cached: fifty scrapes with the right password cost one bcrypt check.
    started = time.monotonic()
    for _ in range(50):
        assert request(d.port, auth=("prometheus", PASSWORD))[0] == 200
    assert time.monotonic() - started < 10
    assert d.stop() == 0


def serving_certificate(port: int, ca: Pair, client: Pair) -> bytes:
    context = client_context(ca, client)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        cert = tls.getpeercert(binary_form=True)
        assert cert is not None
        return cert


def test_a_changed_certificate_is_served_within_5s_without_restart(daemon_factory, logs,
                                                                    tmp_path, pki):
    folder = tmp_path / "tls"
    folder.mkdir()
    first = signed(folder, "server-1", pki["ca"], server=True)
    cert, key = folder / "server.crt", folder / "server.key"
    cert.write_bytes(first.cert.read_bytes())
    key.write_bytes(first.key.read_bytes())
    # Relative paths: against the web config's own folder.
    web = write_web(folder / "web.yml", {"tls_server_config": {
        "cert_file": "server.crt", "key_file": "server.key",
        "client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": str(pki["ca"].cert)}})
    d = daemon_factory(daemon_config(logs, web_config_file=str(web))).start(wait_ready=False)
    assert d.proc is not None
    wait_ready(d, client_context(pki["ca"], pki["client"]))
    before = serving_certificate(d.port, pki["ca"], pki["client"])
    assert before == ssl.PEM_cert_to_DER_cert(first.cert.read_text())
    second = signed(folder, "server-2", pki["ca"], server=True)
    # As a certificate manager does: new files renamed into place.
    for new, target in ((second.key, key), (second.cert, cert)):
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(new.read_bytes())
        os.replace(tmp, target)
    changed = time.monotonic()
    expected = ssl.PEM_cert_to_DER_cert(second.cert.read_text())
    wait_until(lambda: serving_certificate(d.port, pki["ca"], pki["client"]) == expected, 10,
               what="the new certificate")
    assert time.monotonic() - changed < 5 + 1  # 5 s, plus the test's own handshakes
    assert d.proc.poll() is None and "web config reloaded" in d.log()
    assert d.stop() == 0


def test_a_bad_new_web_config_is_logged_with_its_key_path_and_the_old_one_serves(
        daemon_factory, logs, tmp_path, pki):
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    good = {"tls_server_config": {"cert_file": str(pki["server"].cert),
                                  "key_file": str(pki["server"].key)},
            "basic_auth_users": {"prometheus": hashed}}
    web = write_web(tmp_path / "web.yml", good)
    d = daemon_factory(daemon_config(logs, web_config_file=str(web))).start(wait_ready=False)
    context = client_context(pki["ca"])
    auth = ("prometheus", PASSWORD)
    wait_ready(d, context, auth)
    bad = {**good, "tls_server_config": {**good["tls_server_config"], "min_verison": "TLS13"}}
    write_web(web, bad)
    wait_until(lambda: "tls_server_config.min_verison" in d.log(), 10, what="the rejection")
    assert "web config rejected, keeping the running one" in d.log()
    assert request(d.port, context=context, auth=auth)[0] == 200
    assert request(d.port, context=context)[0] == 401
    time.sleep(2)  # the same bad version is not logged again every second
    assert d.log().count("tls_server_config.min_verison") == 1
    # A key that does not match its certificate is as bad, and as harmless.
    write_web(web, {**good, "tls_server_config": {"cert_file": str(pki["server"].cert),
                                                  "key_file": str(pki["client"].key)}})
    wait_until(lambda: "tls_server_config.key_file" in d.log(), 10, what="the rejection")
    assert request(d.port, context=context, auth=auth)[0] == 200
    # Fixed: dropping basic auth takes effect.
    write_web(web, {"tls_server_config": good["tls_server_config"]})
    wait_until(lambda: request(d.port, context=context)[0] == 200, 10, what="the reload")
    assert d.stop() == 0


@pytest.mark.parametrize("web,path", [
    ({"tls_server_config": {"cert_file": "missing.crt", "key_file": "missing.key"}},
     "tls_server_config.cert_file"),
    ({"basic_auth_users": {"prometheus": "plain-text"}}, "basic_auth_users.prometheus"),
    ({"http_server_config": {"headers": {"X-Frame-Options": "allow"}}},
     "http_server_config.headers.X-Frame-Options"),
    ({"tls_srever_config": {}}, "tls_srever_config"),
])
def test_bad_web_config_at_start_exits_2_naming_the_key_path(tmp_path, logs, web, path):
    file = write_web(tmp_path / "web.yml", web)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**daemon_config(logs), "state_dir": str(tmp_path / "s"),
                                      "web_config_file": "web.yml"}))
    out = run_cli("check-config", str(config))
    assert out.returncode == 2 and f"{file}: {path}:" in out.stderr, out.stderr
    config.write_text(yaml.safe_dump({**daemon_config(logs), "state_dir": str(tmp_path / "s")}))
    assert run_cli("check-config", str(config)).returncode == 0
    # --web.config.file on run names it without the config key.
    out = subprocess.run([sys.executable, "-m", "monitor", "run", "--config", str(config),
                          "--web.config.file", str(file)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and f"{path}:" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "s").exists()  # refused before any state was touched
