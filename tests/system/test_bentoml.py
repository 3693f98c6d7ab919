"""BentoML, for real: a toy service with `bentoml.monitor`, served by `bentoml serve` on
loopback (from its own venv, BENTOML_PYTHON or .venv-bentoml/), its real monitoring logs
read by the daemon with `format: bentoml`: local naive timestamps in the server's zone,
roles from its schema file, its TimedRotatingFileHandler forced to rotate every second
through `log_config_file`, kill -9 of the daemon mid-stream: exact counts; and the same
metrics as the same predictions written as plain JSON Lines."""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from tests.system.conftest import free_port, model_config, run_cli, wait_until

ROOT = Path(__file__).resolve().parents[2]
BENTOML_PYTHON = Path(os.environ.get("BENTOML_PYTHON", ROOT / ".venv-bentoml" / "bin" / "python"))
ZONE = "America/New_York"  # the server's local time, 4 or 5 hours off UTC

SERVICE = '''
import bentoml


# README's BentoML monitoring config.
@bentoml.service(workers=1, monitoring={
    "enabled": True,
    "type": "default",
    "options": {"log_path": {log_path!r}, "log_config_file": {log_config_file!r}},
})
class Fraud:
    @bentoml.api
    def predict(self, amount: float, truth: int) -> list[float]:
        p = min(max(amount / 100.0, 0.0), 1.0)
        scores = [1.0 - p, p]
        with bentoml.monitor("fraud") as mon:
            mon.log(amount, name="amount", role="feature", data_type="numerical")
            mon.log(scores, name="scores", role="prediction", data_type="numerical_sequence")
            mon.log(truth, name="truth", role="target", data_type="categorical")
        return scores
'''

# BentoML's own default logging config for monitors, with the data log rotated every
# second instead of daily: the same handler, the same renames, just sooner.
LOG_CONFIG = '''
version: 1
disable_existing_loggers: false
loggers:
  bentoml_monitor_data:
    level: INFO
    handlers: [bentoml_monitor_data]
    propagate: false
  bentoml_monitor_schema:
    level: INFO
    handlers: [bentoml_monitor_schema]
    propagate: false
handlers:
  bentoml_monitor_data:
    class: logging.handlers.TimedRotatingFileHandler
    level: INFO
    formatter: bentoml_json
    filename: '{data_filename}'
    when: "S"
    interval: 1
  bentoml_monitor_schema:
    class: logging.handlers.RotatingFileHandler
    level: INFO
    formatter: bentoml_json
    filename: '{schema_filename}'
formatters:
  bentoml_json:
    class: pythonjsonlogger.jsonlogger.JsonFormatter
    format: "()"
    validate: false
'''

pytestmark = pytest.mark.skipif(not BENTOML_PYTHON.exists(),
                                reason=f"no BentoML venv at {BENTOML_PYTHON} (.ci/run makes one)")


@pytest.fixture
def bento(tmp_path: Path):
    """`bentoml serve` of the toy service; yields (port, monitoring log folder)."""
    folder = tmp_path / "svc"
    folder.mkdir()
    logs = tmp_path / "monitoring"
    (folder / "monitor-logging.yaml").write_text(LOG_CONFIG)
    (folder / "service.py").write_text(SERVICE.replace("{log_path!r}", repr(str(logs))).replace(
        "{log_config_file!r}", repr(str(folder / "monitor-logging.yaml"))))
    port = free_port()
    env = {**os.environ, "TZ": ZONE, "BENTOML_HOME": str(tmp_path / "bentoml-home"),
           "BENTOML_DO_NOT_TRACK": "True"}
    with open(tmp_path / "bentoml.log", "wb") as out:
        proc = subprocess.Popen([str(BENTOML_PYTHON), "-m", "bentoml", "serve", "service:Fraud",
                                 "--host", "127.0.0.1", "--port", str(port)],
                                cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "bentoml.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_until(ready, 120)
        yield port, logs
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def predict(port: int, amount: float, truth: int) -> list[float]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/predict",
                                     data=json.dumps({"amount": amount, "truth": truth}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_bentoml_monitoring_logs_count_exactly_once_across_rotation_and_kill_9(
        daemon_factory, bento, tmp_path):
    port, logs = bento
    rng = random.Random(3)
    d = daemon_factory({
        "sources": [{"name": "bento", "path": str(logs / "fraud" / "data" / "data.*.log*"),
                     "format": "bentoml", "timezone": ZONE, "model": "fraud"}],
        "models": {"fraud": model_config()}})
    d.start()
    truths = [0, 0]
    sent = 0
    for round_ in range(3):
        deadline = time.monotonic() + 2.5  # rotations every second meanwhile
        while time.monotonic() < deadline:
            truth = rng.randint(0, 1)
            predict(port, rng.choice([10.0, 25.0, 60.0, 90.0]), truth)
            truths[truth] += 1
            sent += 1
        if round_ < 2:
            d.kill()
            d.start()
    rotated = list((logs / "fraud" / "data").glob("data.*.log.*"))
    assert rotated, "BentoML's handler did not rotate"
    d.wait_value("model_drift_predictions_total", sent, timeout_s=30, model="fraud")
    samples = d.scrape()
    for index, cls in enumerate(("legit", "fraud")):
        key = ("model_drift_labels_total", frozenset({"model": "fraud", "class": cls}.items()))
        assert samples[key] == truths[index]
    # Naive local times read in the right zone: the newest event is now, not hours away.
    newest = samples[("model_drift_last_event_timestamp_seconds", frozenset({"model": "fraud"}.items()))]
    assert abs(newest - time.time()) < 60
    assert d.stop() == 0

    # The same predictions as plain JSON Lines give the same metrics (replay, to 1e-12).
    native = tmp_path / "native.jsonl"
    with open(native, "w") as out:
        for path in sorted((logs / "fraud" / "data").iterdir()):
            for text in path.read_text().splitlines():
                row = json.loads(text)
                ts = datetime.fromisoformat(row["timestamp"]).replace(tzinfo=ZoneInfo(ZONE))
                out.write(json.dumps({"ts": ts.isoformat(), "id": row["request_id"],
                                      "probs": row["scores"], "label": row["truth"]}) + "\n")
    bentoml_config = {**d.config, "state_dir": str(tmp_path / "unused")}
    native_config = {**bentoml_config, "sources": [{"name": "bento", "path": str(native),
                                                    "model": "fraud"}]}
    assert_same_replay(tmp_path, bentoml_config, native_config)


def assert_same_replay(tmp_path: Path, a: dict, b: dict) -> None:
    results = []
    for name, config in (("a", a), ("b", b)):
        path = tmp_path / f"replay-{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        out = run_cli("replay", "--config", str(path), "--json")
        assert out.returncode == 0, out.stderr
        results.append({(m["name"], json.dumps(m["labels"], sort_keys=True)): m["value"]
                        for m in json.loads(out.stdout)["metrics"]})
    assert results[0].keys() == results[1].keys()
    assert len(results[0]) > 10
    for key, x in results[0].items():
        assert x == pytest.approx(results[1][key], rel=1e-12, abs=1e-12), key
