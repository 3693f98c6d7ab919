"""A real Prometheus scrapes the daemon through mutual TLS and basic auth, configured the
way Prometheus users do it (a scrape job's `tls_config` and `basic_auth`); jobs that lack
the client certificate or the password are refused."""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from pathlib import Path

import bcrypt
import pytest

from tests.certs import self_signed, signed
from tests.deploy.conftest import Harness, PrometheusAPI, free_port, monitor_command, write_yaml
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
PASSWORD = "correct horse battery staple"


def test_prometheus_scrapes_through_mtls_and_basic_auth(harness: Harness, tmp_path: Path):
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = self_signed(pki, "ca", ca=True)
    server = signed(pki, "server", ca, server=True)
    client = signed(pki, "prometheus", ca, server=False)
    web = write_yaml(harness.path("daemon", "web.yml"), {
        "tls_server_config": {"cert_file": str(server.cert), "key_file": str(server.key),
                              "client_auth_type": "RequireAndVerifyClientCert",
                              "client_ca_file": str(ca.cert)},
        "basic_auth_users": {"prometheus": bcrypt.hashpw(PASSWORD.encode(),
                                                         bcrypt.gensalt(10)).decode()},
    })
    log = harness.path("logs", "preds.jsonl")
    log.write_text("".join(json.dumps({"ts": time.time(), "probs": [0.3, 0.7], "label": 1}) + "\n"
                           for _ in range(7)))
    port = free_port()
    config = write_yaml(harness.path("daemon", "config.yaml"), {
        "listen": f"127.0.0.1:{port}", "state_dir": str(harness.path("daemon", "state")),
        "web_config_file": str(web),
        "sources": [{"name": "preds", "path": str(log), "model": "fraud"}],
        "models": {"fraud": {"classes": ["legit", "fraud"], "windows": ["5m"]}}})
    daemon = harness.start("daemon", monitor_command("run", "--config", str(config)))

    context = ssl.create_default_context(cafile=str(ca.cert))
    context.load_cert_chain(str(client.cert), str(client.key))

    def ready() -> bool:
        assert daemon.poll() is None, harness.log_tail("daemon")
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=context,
                                        timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    wait_until(ready, 30, what="the daemon over TLS")

    target = {"static_configs": [{"targets": [f"127.0.0.1:{port}"]}], "scheme": "https"}
    tls = {"ca_file": str(ca.cert), "cert_file": str(client.cert), "key_file": str(client.key)}
    auth = {"username": "prometheus", "password": PASSWORD}
    prometheus: PrometheusAPI = harness.start_prometheus({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {"job_name": "drift-monitor", **target, "tls_config": tls, "basic_auth": auth},
            {"job_name": "no-client-cert", **target, "tls_config": {"ca_file": str(ca.cert)},
             "basic_auth": auth},
            {"job_name": "no-password", **target, "tls_config": tls},
        ]})

    def up(job: str) -> float | None:
        return prometheus.scalar(f'up{{job="{job}"}}')

    wait_until(lambda: up("drift-monitor") == 1, 60, interval_s=0.5, what="up == 1 over mTLS")
    wait_until(lambda: prometheus.scalar(
        'model_drift_predictions_total{job="drift-monitor",model="fraud"}') == 7, 30,
        interval_s=0.5, what="the counted predictions in Prometheus")
    wait_until(lambda: up("no-client-cert") == 0 and up("no-password") == 0, 60,
               interval_s=0.5, what="the jobs without credentials down")
    assert daemon.poll() is None
    assert "Traceback" not in harness.log_tail("daemon", 500)
