"""deploy/Dockerfile and deploy/docker-compose.yml, checked without a container engine.

No Docker daemon runs here or in CI, so these tests read the files: the Dockerfile's
instructions (lint-level), the compose file's references to files and services, the
image's HEALTHCHECK command run against a local stub server, and the demo writer's
output read by the real daemon.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.deploy.conftest import (
    DEPLOY_DIR,
    REPO_ROOT,
    Samples,
    alert_threshold,
    replay,
    run_monitor,
    sample,
)

DOCKERFILE = DEPLOY_DIR / "Dockerfile"
COMPOSE = DEPLOY_DIR / "docker-compose.yml"
WRITER = DEPLOY_DIR / "demo" / "writer.py"
IMAGE_UID = "10001"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continuation line"
    return out


def final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value)
    return value


def test_dockerfile_builds_from_slim_python_and_pip_installs_the_project():
    steps = instructions(DOCKERFILE)
    args = dict(arg.split("=", 1) for keyword, arg in steps if keyword == "ARG" and "=" in arg)
    bases = [arg.split()[0] for keyword, arg in steps if keyword == "FROM"]
    resolved = [args.get(base.strip("${}"), base) for base in bases]
    assert resolved and all(base.startswith("python:") and base.endswith("-slim")
                            for base in resolved), resolved
    assert any(keyword == "RUN" and "pip install ." in arg for keyword, arg in steps)


def test_dockerfile_copies_only_files_that_exist_and_never_adds_urls():
    steps = instructions(DOCKERFILE)
    for keyword, arg in steps:
        assert keyword != "ADD", f"ADD {arg}: use COPY (ADD fetches URLs and unpacks archives)"
        if keyword == "COPY" and not arg.startswith("--from"):
            for source in shlex.split(arg)[:-1]:
                assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the build context"


def test_dockerignore_keeps_what_the_dockerfile_copies():
    patterns = [line for line in (DEPLOY_DIR / "Dockerfile.dockerignore").read_text().splitlines()
                if line and not line.startswith("#")]
    copied = {source.rstrip("/")
              for keyword, arg in instructions(DOCKERFILE)
              if keyword == "COPY" and not arg.startswith("--from")
              for source in shlex.split(arg)[:-1]}
    assert patterns[0] == "*"
    assert copied <= {pattern.lstrip("!").rstrip("/") for pattern in patterns
                      if pattern.startswith("!")}


def test_image_runs_as_a_fixed_non_root_user():
    users = [arg for keyword, arg in final_stage(instructions(DOCKERFILE)) if keyword == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user == IMAGE_UID, "numeric, so Kubernetes' runAsNonRoot can check it"


def test_image_keeps_state_in_a_volume_and_runs_the_daemon_by_default():
    stage = final_stage(instructions(DOCKERFILE))
    volumes = [exec_form(arg) for keyword, arg in stage if keyword == "VOLUME"]
    assert ["/var/lib/drift-monitor"] in volumes
    commands = [exec_form(arg) for keyword, arg in stage if keyword == "CMD"]
    assert commands[-1][:4] == ["drift-monitor", "run", "--config",
                                "/etc/drift-monitor/config.yaml"]


def test_image_listens_on_every_interface_whatever_the_config_says(tmp_path):
    """A config copied from config/example.yaml listens on 127.0.0.1: inside a container
    the health check passes and the published port reaches nothing. The image's command
    overrides it, on the port it exposes and its health check asks."""
    stage = final_stage(instructions(DOCKERFILE))
    (command,) = [exec_form(arg) for keyword, arg in stage if keyword == "CMD"][-1:]
    address = command[command.index("--web.listen-address") + 1]
    host, port = address.rsplit(":", 1)
    assert host == "0.0.0.0"
    assert [arg for keyword, arg in stage if keyword == "EXPOSE"] == [port]
    assert f"127.0.0.1:{port}/healthz" in healthcheck_command()[-1]
    # The daemon accepts the command's flags with the example config (a wrong flag would
    # exit 2 before it gets to the state directory).
    example = yaml.safe_load((REPO_ROOT / "config" / "example.yaml").read_text())
    example["state_dir"] = str(tmp_path / "a-file")
    (tmp_path / "a-file").write_text("")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(example))
    result = run_monitor(*command[1:3], str(config), *command[4:])
    assert result.returncode == 1 and "not a directory" in result.stderr, result.stderr


def healthcheck_command() -> list[str]:
    checks = [arg for keyword, arg in final_stage(instructions(DOCKERFILE))
              if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    options, _, command = checks[0].partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    return exec_form(command)


def test_healthcheck_asks_healthz_with_python_not_curl():
    command = healthcheck_command()
    assert command[0] == "python"
    assert "urllib.request" in command[-1] and "/healthz" in command[-1]
    assert not {"curl", "wget"} & set(" ".join(command).split())


class StubServer(ThreadingHTTPServer):
    """Answers /healthz with `status`."""

    status = 200


class StubHandler(BaseHTTPRequestHandler):
    server: StubServer

    def do_GET(self) -> None:
        self.send_response(self.server.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def stub_server() -> Iterator[StubServer]:
    server = StubServer(("127.0.0.1", 0), StubHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_healthcheck(url: str) -> int:
    command = [sys.executable, *healthcheck_command()[1:]]
    return subprocess.run(command, env={"HEALTHCHECK_URL": url}, capture_output=True,
                          timeout=30, check=False).returncode


@pytest.mark.parametrize(("status", "exit_code"), [(200, 0), (503, 1)])
def test_healthcheck_exit_code_follows_healthz(stub_server, status, exit_code):
    stub_server.status = status
    port = stub_server.server_address[1]
    assert run_healthcheck(f"http://127.0.0.1:{port}/healthz") == exit_code


def test_healthcheck_fails_when_nothing_listens(stub_server):
    port = stub_server.server_address[1]
    stub_server.shutdown()
    stub_server.server_close()
    assert run_healthcheck(f"http://127.0.0.1:{port}/healthz") == 1


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    """(host path, container path) of the service's bind mounts."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts.append((source, target))
    return mounts


def test_compose_runs_writer_two_daemons_prometheus_alertmanager_grafana():
    services = compose()["services"]
    assert set(services) == {"writer", "drift-monitor-a", "drift-monitor-b", "prometheus",
                             "alertmanager", "grafana"}


def test_compose_builds_the_image_from_the_shipped_dockerfile():
    for name, service in compose()["services"].items():
        if "build" in service:
            context = DEPLOY_DIR / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE, name


def test_compose_bind_mounts_exist():
    for name, service in compose()["services"].items():
        for source, target in bind_mounts(service):
            assert (DEPLOY_DIR / source).exists(), f"{name}: {source} -> {target} is missing"


def test_compose_named_volumes_are_declared():
    document = compose()
    declared = set(document["volumes"])
    for name, service in document["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"


def test_compose_publishes_ports_on_loopback_only():
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port} listens on every interface"


def test_compose_wires_each_daemon_to_its_own_shard_and_state():
    services = compose()["services"]
    writer_dirs = [arg for prev, arg in zip(services["writer"]["command"],
                                            services["writer"]["command"][1:])
                   if prev == "--out"]
    writer_volumes = dict(volume.split(":")[:2] for volume in services["writer"]["volumes"])
    shards = {source for source, target in writer_volumes.items() if target in writer_dirs}
    daemon_logs, daemon_states = [], []
    for name in ("drift-monitor-a", "drift-monitor-b"):
        mounts = {target: source for source, target, *_ in
                  (volume.split(":") for volume in services[name]["volumes"])}
        daemon_logs.append(mounts["/var/log/predictions"])
        daemon_states.append(mounts["/var/lib/drift-monitor"])
        assert mounts["/etc/drift-monitor/config.yaml"] == "./demo/config.yaml"
    assert sorted(daemon_logs) == sorted(shards) and len(shards) == 2
    assert len(set(daemon_states)) == 2


def test_compose_prometheus_scrapes_both_daemons_with_the_shipped_rules():
    services = compose()["services"]
    mounts = dict((target, source) for source, target in bind_mounts(services["prometheus"]))
    config = yaml.safe_load((DEPLOY_DIR / mounts["/etc/prometheus/prometheus.yml"]).read_text())
    assert (DEPLOY_DIR / mounts["/etc/prometheus/rules"]).resolve() == DEPLOY_DIR / "prometheus" / "rules"
    assert config["rule_files"] == ["rules/*.yml"]
    demo_config = yaml.safe_load((DEPLOY_DIR / "demo" / "config.yaml").read_text())
    port = demo_config["listen"].rsplit(":", 1)[1]
    (job,) = config["scrape_configs"]
    targets = job["static_configs"][0]["targets"]
    assert job["job_name"] == "drift-monitor"
    assert sorted(targets) == [f"drift-monitor-a:{port}", f"drift-monitor-b:{port}"]
    alertmanagers = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["alertmanager:9093"]


def test_compose_grafana_gets_the_provisioning_and_the_dashboard():
    services = compose()["services"]
    mounts = dict((target, source) for source, target in bind_mounts(services["grafana"]))
    provisioning = (DEPLOY_DIR / mounts["/etc/grafana/provisioning"]).resolve()
    dashboards = (DEPLOY_DIR / mounts["/var/lib/grafana/dashboards"]).resolve()
    assert provisioning == REPO_ROOT / "grafana" / "provisioning"
    assert (dashboards / "drift-monitor.json").is_file()
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == "/var/lib/grafana/dashboards/drift-monitor.json"
    provider = yaml.safe_load((provisioning / "dashboards" / "drift-monitor.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_compose_daemon_config_passes_check_config():
    result = run_monitor("check-config", str(DEPLOY_DIR / "demo" / "config.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def demo_replay(tmp_path: Path, *writer_args: str) -> Samples:
    """Run the writer into tmp_path, replay the compose config on it, return the samples."""
    subprocess.run([sys.executable, str(WRITER), "--out", str(tmp_path / "logs"),
                    "--seed", "7", *writer_args], check=True, timeout=60)
    config = yaml.safe_load((DEPLOY_DIR / "demo" / "config.yaml").read_text())
    config["sources"][0]["path"] = str(tmp_path / "logs" / "predictions-*.jsonl")
    config["state_dir"] = str(tmp_path / "state")
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return replay(config_path)


def test_demo_writer_lines_are_read_by_the_daemon(tmp_path):
    samples = demo_replay(tmp_path, "--count", "1500", "--bad-every", "100")
    predictions = sample(samples, "model_drift_predictions_total", model="fraud")
    assert predictions == 1500 - 15
    labels = sum(sample(samples, "model_drift_labels_total", model="fraud", **{"class": c})
                 for c in ("legit", "fraud"))
    assert 0.7 * predictions < labels < 0.9 * predictions
    assert sample(samples, "model_drift_kl_divergence", model="fraud", window="5m") < 0.01


def test_demo_writer_drift_moves_the_output_past_the_alert_floor(tmp_path):
    floor = alert_threshold("ModelOutputShift", "model_drift_prediction_kl_divergence")

    def mean_output(samples: Samples) -> np.ndarray:
        total = sample(samples, "model_drift_predictions_total", model="fraud")
        return np.array([sample(samples, "model_drift_probability_total", model="fraud",
                                **{"class": c}) for c in ("legit", "fraud")]) / total

    steady = mean_output(demo_replay(tmp_path / "steady", "--count", "1500"))
    drifted = mean_output(demo_replay(tmp_path / "drifted", "--count", "1500",
                                      "--drift-after", "0"))
    # What the prediction KL of a window shows once the drift fills it.
    assert float(np.sum(steady * np.log(steady / drifted))) > 1.5 * floor
