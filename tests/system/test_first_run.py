"""What a newcomer trips over on the first run: a glob that matches no file, a state_dir
that cannot be used, missing process metrics, a demo whose columns say nothing."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from monitor.core.aggregate import Aggregator
from monitor.shell.config import build_config
from monitor.shell.daemon import UNMATCHED_EVERY_S, Reader
from tests.system.conftest import append, free_port, model_config, parse_metrics, run_cli, source, value
from tests.waiting import wait_until


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write_config(folder: Path, config: dict) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def two_sources(logs: Path, **top: object) -> dict:
    return {"sources": [source(logs / "p-*.jsonl"), source(logs / "q-*.jsonl", name="other")],
            "labels": [{"name": "feedback", "path": str(logs / "labels-*.jsonl")}],
            "models": {"fraud": model_config()}, **top}


# -- a glob that matches no file ---------------------------------------------------------

def test_check_config_warns_about_each_glob_matching_no_file_and_exits_0(tmp_path, logs):
    append(logs / "p-1.jsonl", [{"probs": [0.2, 0.8]}])
    (logs / "q-dir.jsonl").mkdir()  # a folder is not a log file
    out = run_cli("check-config", str(write_config(tmp_path, two_sources(logs))))
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == [
        f"drift-monitor: warning: sources[1].path: no file matches {logs}/q-*.jsonl (source other)",
        f"drift-monitor: warning: labels[0].path: no file matches {logs}/labels-*.jsonl "
        "(source feedback)",
    ]
    assert "2 matching no file" in out.stdout


def test_check_config_is_quiet_when_every_glob_matches(tmp_path, logs):
    for name in ("p-1.jsonl", "q-1.jsonl", "labels-1.jsonl"):
        append(logs / name, [])
    out = run_cli("check-config", str(write_config(tmp_path, two_sources(logs))))
    assert out.returncode == 0 and out.stderr == ""
    assert "matching no file" not in out.stdout


def test_replay_names_each_source_matching_no_file_once(tmp_path, logs):
    append(logs / "p-1.jsonl", [{"probs": [0.2, 0.8], "label": 1}] * 3)
    out = run_cli("replay", str(write_config(tmp_path, two_sources(logs))), "--json")
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if "no file matches" in line]
    assert len(warnings) == 2, out.stderr
    assert any(f"source=other path={logs}/q-*.jsonl" in line for line in warnings)
    assert any(f"source=feedback path={logs}/labels-*.jsonl" in line for line in warnings)


def test_run_warns_and_exports_zero_files_until_the_log_appears(daemon_factory, logs):
    d = daemon_factory(two_sources(logs)).start()
    assert f"no file matches source=preds path={logs}/p-*.jsonl" in d.log()
    samples = d.scrape()
    for name in ("preds", "other", "feedback"):
        assert value(samples, "drift_monitor_source_files", source=name) == 0, name
    append(logs / "p-1.jsonl", [{"ts": 1.7e9, "probs": [0.2, 0.8]}])
    append(logs / "p-2.jsonl", [{"ts": 1.7e9, "probs": [0.2, 0.8]}])
    d.wait_value("drift_monitor_source_files", 2, source="preds")
    assert d.value("drift_monitor_source_files", source="other") == 0
    assert d.stop() == 0


def test_a_source_matching_no_file_is_logged_again_while_it_stays_so(tmp_path, logs, caplog):
    config = build_config(two_sources(logs), str(tmp_path))
    clock = FakeClock()
    reader = Reader(config, Aggregator(config), monotonic=clock, from_start=True)
    caplog.set_level(logging.WARNING, logger="monitor.shell.daemon")

    def warned() -> list[str]:
        reader.step(now=0.0)
        reader.warn_unmatched()
        found = [r.getMessage() for r in caplog.records]
        caplog.clear()
        return sorted(m.split()[3] for m in found)

    assert warned() == ["source=feedback", "source=other", "source=preds"]
    clock.now = UNMATCHED_EVERY_S / 2
    assert warned() == []
    append(logs / "p-1.jsonl", [])
    clock.now = UNMATCHED_EVERY_S + 1
    assert warned() == ["source=feedback", "source=other"]
    reader.close()


# -- state_dir ---------------------------------------------------------------------------

def config_with_state(tmp_path: Path, logs: Path, state_dir: Path) -> Path:
    append(logs / "p-1.jsonl", [])
    return write_config(tmp_path, {"state_dir": str(state_dir), "sources": [source(logs / "p-*.jsonl")],
                                   "models": {"fraud": model_config()}})


def test_check_config_exits_2_when_state_dir_is_a_file(tmp_path, logs):
    (tmp_path / "state").write_text("")
    out = run_cli("check-config", str(config_with_state(tmp_path, logs, tmp_path / "state")))
    assert out.returncode == 2
    assert out.stderr == f"drift-monitor: state_dir: {tmp_path}/state: not a directory\n"


def test_check_config_exits_2_when_state_dir_cannot_be_created(tmp_path, logs):
    (tmp_path / "file").write_text("")
    out = run_cli("check-config", str(config_with_state(tmp_path, logs, tmp_path / "file" / "state")))
    assert out.returncode == 2
    assert (f"state_dir: {tmp_path}/file/state: cannot be created: {tmp_path}/file is not a "
            "directory") in out.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_check_config_exits_2_when_state_dir_is_not_writable(tmp_path, logs):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    for state in (locked, locked / "state"):
        out = run_cli("check-config", str(config_with_state(tmp_path, logs, state)))
        assert out.returncode == 2 and f"state_dir: {state}: " in out.stderr, out.stderr


def test_check_config_accepts_a_state_dir_it_could_create_and_leaves_no_trace(tmp_path, logs):
    state = tmp_path / "a" / "b" / "state"
    out = run_cli("check-config", str(config_with_state(tmp_path, logs, state)))
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "a").exists()
    state.mkdir(parents=True)
    out = run_cli("check-config", str(config_with_state(tmp_path, logs, state)))
    assert out.returncode == 0, out.stderr
    assert list(state.iterdir()) == []


def test_run_says_not_a_directory_for_a_state_dir_that_is_a_file(tmp_path, logs):
    (tmp_path / "state").write_text("")
    out = run_cli("run", "--config", str(config_with_state(tmp_path, logs, tmp_path / "state")))
    assert out.returncode == 1
    assert f"state_dir {tmp_path}/state: not a directory" in out.stderr
    assert "File exists" not in out.stderr and "Traceback" not in out.stderr


# -- standard process metrics ------------------------------------------------------------

def test_scrape_has_the_standard_process_and_python_series(daemon_factory, logs):
    spawned = time.time()
    d = daemon_factory({"sources": [source(logs / "p-*.jsonl")],
                        "models": {"fraud": model_config()}}).start()
    samples = d.scrape()
    names = {name for name, _ in samples}
    for name in ("process_resident_memory_bytes", "process_virtual_memory_bytes",
                 "process_cpu_seconds_total", "process_open_fds", "process_max_fds",
                 "process_start_time_seconds", "python_info", "python_gc_objects_collected_total"):
        assert name in names, name
    assert value(samples, "process_resident_memory_bytes") > 1 << 20
    assert value(samples, "process_open_fds") >= 3
    # The daemon's own process, not the test's (which started before it); /proc rounds
    # the boot time to a second.
    assert value(samples, "process_start_time_seconds") >= spawned - 1.5
    version = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    (info,) = [labels for name, labels in samples if name == "python_info"]
    assert ("version", version) in info
    assert d.stop() == 0


# -- the demo ----------------------------------------------------------------------------

def demo(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "monitor", "demo", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_demo_says_why_it_picked_another_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = demo("--port", str(port), "--duration", "3")
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    line = next(line for line in out.splitlines() if f"port {port} is not free" in line)
    assert "Address already in use" in line
    other = int(line.rsplit("using port ", 1)[1].split()[0])
    assert other != port and f"http://127.0.0.1:{other}/metrics" in out
    assert "no file matches" not in err  # its logs exist before its daemon starts


@pytest.mark.slow
def test_every_demo_column_means_something_within_a_minute():
    port = free_port()
    proc = demo("--port", str(port), "--duration", "120")

    def moved() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                samples = parse_metrics(r.read().decode())
        except OSError:
            return False
        windows = ("10s", "30s", "count:2000")
        output_drift = [value(samples, "model_drift_prediction_kl_divergence", model="fraud",
                              window=w) for w in windows]
        kl = [value(samples, "model_drift_kl_divergence", model="fraud", window=w) for w in windows]
        # Before the drift every value here is below 1e-3 (calibrated outputs, same
        # population); a column stuck at 0 (a window as long as the reference) never passes.
        return (all(v is not None and v > 0.005 for v in output_drift)
                and all(v is not None and v > 0.05 for v in kl))

    try:
        started = time.monotonic()
        wait_until(moved, 90, interval_s=1)
        # The drift starts at 20 s and every window shows it before a minute has passed,
        # plus slack for a loaded machine (start-up of the interpreter included).
        assert time.monotonic() - started < 75
    finally:
        proc.kill()
        proc.wait(timeout=10)


# -- init: a starter config from the logs ------------------------------------------------

def test_init_writes_a_config_that_reads_the_demo_writers_logs_without_a_rejection(tmp_path):
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, str(root / "deploy" / "demo" / "writer.py"), "--out",
                    str(tmp_path / "logs"), "--count", "600", "--bad-every", "0", "--seed", "3"],
                   check=True, timeout=60)
    config = tmp_path / "drift-monitor.yaml"
    out = run_cli("init", "--glob", str(tmp_path / "logs" / "predictions-*.jsonl"),
                  "--output", str(config))
    assert out.returncode == 0, out.stderr
    assert f"next: drift-monitor check-config {config}" in out.stderr
    written = yaml.safe_load(config.read_text())
    (model,) = written["models"].values()
    assert model["classes"] == ["0", "1"]  # probs lists of two, labels 0/1
    assert run_cli("check-config", str(config)).returncode == 0
    out = run_cli("replay", str(config), "--json")
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout)["metrics"]
    (predictions,) = [m["value"] for m in metrics if m["name"] == "model_drift_predictions_total"]
    assert predictions == 600


def test_init_finds_the_demo_models_renamed_nested_fields_and_its_classes(tmp_path):
    from monitor.shell.demo import Writer

    logs = tmp_path / "logs"
    logs.mkdir()
    rng = random.Random(5)
    writer = Writer(str(logs), threading.Event(), seed=5)
    with open(logs / "p-1.jsonl", "w") as fh:
        for i in range(300):
            line, label = writer.prediction(i, 1.7e9 + i, drifted=False)
            doc = {"when": line["ts"], "svc": {"model_name": "fraud-v2", "request_id": line["id"]},
                   "result": {"probabilities": dict(zip(["legit", "fraud"], line["probs"]))}}
            if rng.random() < 0.5:
                doc["ground_truth"] = ["legit", "fraud"][label]
            fh.write(json.dumps(doc) + "\n")
    out = run_cli("init", "--glob", str(logs / "*.jsonl"))
    assert out.returncode == 0, out.stderr
    written = yaml.safe_load(out.stdout)
    assert written["models"] == {"fraud-v2": {"classes": ["legit", "fraud"], "windows": ["5m", "1h"],
                                              "min_samples": 100}}
    assert written["sources"][0]["fields"] == {
        "probabilities": "result.probabilities", "label": "ground_truth",
        "model": "svc.model_name", "id": "svc.request_id"}
    assert "Not found: timestamp" in out.stdout
    config = tmp_path / "c.yaml"
    config.write_text(out.stdout)
    out = run_cli("replay", str(config), "--json")
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout)["metrics"]
    (predictions,) = [m["value"] for m in metrics if m["name"] == "model_drift_predictions_total"]
    assert predictions == 300


def test_init_refuses_no_match_a_label_log_and_an_existing_output(tmp_path, logs):
    out = run_cli("init", "--glob", str(logs / "*.jsonl"))
    assert out.returncode == 2 and f"--glob: no file matches {logs}/*.jsonl" in out.stderr
    append(logs / "labels.jsonl", [{"id": "r-1", "label": 1}] * 3)
    out = run_cli("init", "--glob", str(logs / "*.jsonl"))
    assert out.returncode == 2 and "is it a label log" in out.stderr
    append(logs / "p.jsonl", [{"probs": [0.5, 0.5]}])
    existing = tmp_path / "mine.yaml"
    existing.write_text("keep me\n")
    out = run_cli("init", "--glob", str(logs / "p.jsonl"), "--output", str(existing))
    assert out.returncode == 2 and "exists" in out.stderr
    assert existing.read_text() == "keep me\n"
    assert "Traceback" not in out.stderr


# -- the quickstart ----------------------------------------------------------------------

def quickstart_commands() -> list[str]:
    root = Path(__file__).resolve().parents[2]
    section = (root / "README.md").read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0].strip() for block in section.split("```sh\n")[1:]]


def test_quickstart_is_two_commands_that_make_and_use_a_venv_and_ci_runs_the_second():
    demo_command, test_command = quickstart_commands()
    for command in (demo_command, test_command):
        assert "\n" not in command
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install ")
        # Nothing from outside the venv: no bare pip, python or drift-monitor.
        for step in command.split(" && ")[1:]:
            assert step.startswith(".venv/bin/"), step
    assert demo_command.endswith(".venv/bin/drift-monitor demo")
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text().rstrip("\n")
    assert ci.rsplit("\n", 1)[1] == test_command
