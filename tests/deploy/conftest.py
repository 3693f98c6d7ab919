"""Helpers and fixtures of the deployment tests: bounded waits, real servers on loopback.

The servers (drift-monitor daemons, Prometheus, Alertmanager) listen on 127.0.0.1 only,
on free ports, with their state in temporary directories, and every process a test
starts is stopped in the fixture's teardown, whatever the test's outcome.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import free_port
from tests.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy"
RULES_DIR = DEPLOY_DIR / "prometheus" / "rules"
ALERT_RULES = RULES_DIR / "alerts.yml"
FLEET_RULES = RULES_DIR / "fleet.yml"
DASHBOARD = REPO_ROOT / "grafana" / "dashboards" / "drift-monitor.json"

# Samples by (metric name, sorted label pairs).
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# Debian package names, for the skip messages.
PACKAGES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
}


def binary(name: str) -> str:
    """The path of a Prometheus tool, or skip the test saying how to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not found: install the Debian package {PACKAGES.get(name, name)}")
    return path


def monitor_command(*args: str) -> list[str]:
    """`python -m monitor ...` with this interpreter, from the repository root."""
    return [sys.executable, "-m", "monitor", *args]


def run_monitor(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(monitor_command(*args), cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout_s, check=False)


def replay(config_path: Path) -> Samples:
    """`python -m monitor replay --config FILE --json`: the final model_drift_* samples."""
    result = run_monitor("replay", "--config", str(config_path), "--json")
    assert result.returncode == 0, result.stderr
    return {(m["name"], tuple(sorted(m["labels"].items()))): float(m["value"])
            for m in json.loads(result.stdout)["metrics"]}


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def rules_of(path: Path) -> list[dict[str, Any]]:
    """Every rule of every group in a Prometheus rule file."""
    return [rule for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
            for rule in group["rules"]]


def alert_rule(name: str) -> dict[str, Any]:
    (rule,) = [rule for rule in rules_of(ALERT_RULES) if rule.get("alert") == name]
    return rule


def alert_threshold(name: str, metric: str) -> float:
    """The number that alert `name` compares `metric{...}` with (`> x` or `>= x`)."""
    match = re.search(rf"{re.escape(metric)}\{{[^}}]*\}}\s*>=?\s*([0-9.]+)",
                      alert_rule(name)["expr"])
    assert match, f"{name}: no threshold on {metric}"
    return float(match[1])


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# Every server is on loopback: never route through an http_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout_s: float = 5) -> tuple[int, bytes]:
    """Status and body; a refused connection is status 0."""
    try:
        with _OPENER.open(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


@dataclass(frozen=True)
class DashboardQuery:
    """A PromQL expression of the dashboard, as Grafana sends it."""

    where: str                 # panel title and refId, annotation or variable name
    expr: str
    instant: bool              # an instant query, not a range query
    label: str | None = None   # label_values(expr, label): the label the variable lists


LABEL_VALUES = re.compile(r"^label_values\((?P<expr>.*),\s*(?P<label>\w+)\)$", re.DOTALL)


def dashboard_queries(dashboard: dict[str, Any]) -> list[DashboardQuery]:
    """Every PromQL expression in the dashboard: panel targets, annotations, variables."""
    queries: list[DashboardQuery] = []
    panels = list(dashboard["panels"])
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            queries.append(DashboardQuery(f"{panel['title']} {target['refId']}",
                                          target["expr"], bool(target.get("instant"))))
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            queries.append(DashboardQuery(f"annotation {annotation['name']}",
                                          annotation["expr"], instant=False))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = LABEL_VALUES.match(variable["query"])
            assert match, f"variable {variable['name']}: not label_values(...)"
            queries.append(DashboardQuery(f"variable {variable['name']}", match["expr"],
                                          instant=True, label=match["label"]))
    return queries


class PromQLError(AssertionError):
    """Prometheus answered a query with an error."""


class PrometheusAPI:
    """The parts of Prometheus's HTTP API the tests use."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def get(self, path: str, **params: str | float) -> Any:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        status, body = http_get(url, timeout_s=10)
        try:
            answer = json.loads(body)
        except json.JSONDecodeError as error:
            raise PromQLError(f"GET {url}: status {status}, not JSON: {body[:200]!r}") from error
        if answer.get("status") != "success":
            raise PromQLError(f"GET {url}: {answer.get('errorType')}: {answer.get('error')}")
        return answer["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, str | float] = {"query": expr}
        if at is not None:
            params["time"] = at
        return self.get("/api/v1/query", **params)["result"]

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> list[Any]:
        return self.get("/api/v1/query_range", query=expr, start=start, end=end,
                        step=step_s)["result"]

    def values(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant vector as {sorted label pairs: value}."""
        return {tuple(sorted(s["metric"].items())): float(s["value"][1])
                for s in self.query(expr)}

    def scalar(self, expr: str) -> float | None:
        """The value of a one-element vector, None while it is empty."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, f"{expr}: expected one series, got {result}"
        return float(result[0]["value"][1])


class Harness:
    """Starts servers on loopback in one temporary directory and stops them all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def path(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def start(self, name: str, argv: list[str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
        log_path = self.path("logs", f"{name}.log")
        with open(log_path, "wb") as log:
            process = subprocess.Popen(argv, cwd=cwd or self.root, stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.processes.append((name, process, log_path))
        return process

    def log_tail(self, name: str, lines: int = 30) -> str:
        for process_name, _, log_path in self.processes:
            if process_name == name:
                text = log_path.read_text(encoding="utf-8", errors="replace")
                return "\n".join(text.splitlines()[-lines:])
        return ""

    def wait_http_ok(self, name: str, process: subprocess.Popen[bytes], url: str,
                     timeout_s: float = 30) -> None:
        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}:\n"
                                     f"{self.log_tail(name)}")
            return http_get(url, timeout_s=2)[0] == 200

        try:
            wait_until(ready, timeout_s, what=f"{name} at {url}")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.log_tail(name)}") from None

    def start_daemon(self, name: str, config: dict[str, Any]) -> str:
        """`python -m monitor run` on config with a free loopback port; its base URL."""
        port = free_port()
        config = {"listen": f"127.0.0.1:{port}", "state_dir": str(self.path(name, "state")),
                  "checkpoint_interval": "1s", **config}
        config_path = write_yaml(self.path(name, "config.yaml"), config)
        process = self.start(name, monitor_command("run", "--config", str(config_path)),
                             cwd=REPO_ROOT)
        base_url = f"http://127.0.0.1:{port}"
        self.wait_http_ok(name, process, f"{base_url}/healthz")
        return base_url

    @staticmethod
    def prometheus_config(targets: list[str], rule_files: list[Path],
                          alertmanager: str | None = None) -> dict[str, Any]:
        """A Prometheus config scraping targets as the job drift-monitor, every second."""
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{"job_name": "drift-monitor",
                                "static_configs": [{"targets": targets}]}],
        }
        if alertmanager is not None:
            config["alerting"] = {"alertmanagers": [
                {"static_configs": [{"targets": [alertmanager.removeprefix("http://")]}]}]}
        return config

    def start_prometheus(self, config: dict[str, Any], retention: str = "1h") -> PrometheusAPI:
        """Prometheus on loopback; blocks already in path("prometheus", "data") (backfilled
        ones) are served, and kept while newer than `retention` before the newest."""
        prometheus = binary("prometheus")
        port = free_port()
        config_path = write_yaml(self.path("prometheus", "prometheus.yml"), config)
        process = self.start("prometheus", [
            prometheus,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={self.path('prometheus', 'data')}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.retention.time={retention}",
        ])
        base_url = f"http://127.0.0.1:{port}"
        self.wait_http_ok("prometheus", process, f"{base_url}/-/ready")
        return PrometheusAPI(base_url)

    def start_alertmanager(self) -> str:
        alertmanager = binary("prometheus-alertmanager")
        port = free_port()
        config_path = write_yaml(self.path("alertmanager", "alertmanager.yml"), {
            "route": {"receiver": "null", "group_wait": "1s", "group_interval": "1s"},
            "receivers": [{"name": "null"}],
        })
        process = self.start("alertmanager", [
            alertmanager,
            f"--config.file={config_path}",
            f"--storage.path={self.path('alertmanager', 'data')}",
            f"--web.listen-address=127.0.0.1:{port}",
            # No cluster: it would listen on every interface and gossip for peers.
            "--cluster.listen-address=",
        ])
        base_url = f"http://127.0.0.1:{port}"
        self.wait_http_ok("alertmanager", process, f"{base_url}/-/ready")
        return base_url

    def stop_all(self) -> None:
        for _, process, _ in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process, _ in reversed(self.processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    servers = Harness(tmp_path_factory.mktemp("servers"))
    try:
        yield servers
    finally:
        servers.stop_all()


@pytest.fixture(scope="session")
def promtool() -> str:
    return binary("promtool")


@pytest.fixture(scope="session")
def amtool() -> str:
    return binary("amtool")
