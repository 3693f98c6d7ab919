"""`drift-monitor replay`: the final values, the values at every step (JSON Lines,
OpenMetrics), and what it says about the lines it read. Real files, the real CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.system.conftest import append, run_cli

START = 1_700_000_040  # a multiple of 60 and of 120
STEP_S = 60


def write_config(folder: Path, config: dict) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def stream(folder: Path, seconds: int = 400, seed: int = 3) -> tuple[list, list]:
    """Predictions at every second from START (so every step has an event at its very
    time), a third labelled inline, a third labelled 7 s later in a label log, with bad
    lines among them. Returns (prediction lines, label lines) as (ts, line)."""
    rng = np.random.default_rng(seed)
    predictions: list[tuple[float, dict | str]] = []
    labels: list[tuple[float, dict | str]] = []
    for i in range(seconds + 1):
        ts = START + i
        probs = rng.dirichlet([1, 2, 4]).round(6)
        probs[-1] = 1 - probs[:-1].sum()
        line: dict = {"ts": ts, "id": f"r-{i}", "probs": probs.tolist()}
        label = int(rng.choice(3, p=[0.2, 0.3, 0.5] if i < seconds // 2 else [0.5, 0.3, 0.2]))
        if i % 3 == 0:
            line["label"] = label
        elif i % 3 == 1:
            labels.append((ts + 7, {"ts": ts + 7, "id": f"r-{i}", "label": label}))
        predictions.append((ts, line))
        if i % 50 == 10:
            predictions.append((ts, {"ts": ts, "probs": [0.5, 0.6, 0.2]}))  # bad_sum
            predictions.append((ts, "not json"))  # sorts with the line before it
    labels.sort(key=lambda item: item[0])
    return predictions, labels


def write_logs(folder: Path, predictions: list, labels: list, until: float = math.inf) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    append(folder / "predictions.jsonl", [line for ts, line in predictions if ts <= until])
    append(folder / "labels.jsonl", [line for ts, line in labels if ts <= until])
    return write_config(folder, {
        "sources": [{"name": "preds", "path": str(folder / "predictions.jsonl"), "model": "m"}],
        "labels": [{"name": "feedback", "path": str(folder / "labels.jsonl"), "model": "m"}],
        "models": {"m": {"classes": ["a", "b", "c"], "windows": ["1m", "3m", {"count": 100}],
                         "min_samples": 20}},
    })


def by_series(metrics: list[dict]) -> dict[tuple, float]:
    return {(m["name"], tuple(sorted(m["labels"].items()))): m["value"] for m in metrics}


def replay_json(config: Path, *args: str) -> list[dict]:
    out = run_cli("replay", "--config", str(config), "--json", *args)
    assert out.returncode == 0, out.stderr
    if "--step" not in args:
        return [json.loads(out.stdout)]
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_json_lines_at_each_step_equal_replay_of_the_lines_up_to_it(tmp_path):
    predictions, labels = stream(tmp_path)
    steps = replay_json(write_logs(tmp_path / "all", predictions, labels), "--step", "1m")
    last_event = max(ts for ts, _ in [*predictions, *labels])
    assert [s["ts"] for s in steps] == list(range(START, last_event + STEP_S, STEP_S))
    assert steps[-1]["ts"] - STEP_S < last_event <= steps[-1]["ts"]
    for step in steps[:-1]:  # the last step is after the last event: its clock differs
        (prefix,) = replay_json(write_logs(tmp_path / str(step["ts"]), predictions, labels,
                                           until=step["ts"]))
        got, want = by_series(step["metrics"]), by_series(prefix["metrics"])
        assert got.keys() == want.keys(), step["ts"]
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), (step["ts"], key)
    final = by_series(steps[-1]["metrics"])
    assert final[("drift_monitor_lines_total", (("source", "preds"), ("status", "rejected")))] == 16
    assert final[("drift_monitor_rejected_lines_total",
                  (("reason", "bad_sum"), ("source", "preds")))] == 8
    assert final[("drift_monitor_lines_total", (("source", "feedback"), ("status", "ok")))] == len(labels)


def test_a_line_older_than_a_shown_step_is_applied_when_read(tmp_path):
    predictions, labels = stream(tmp_path, seconds=300)
    after = {"ts": START + 330, "probs": [0.2, 0.3, 0.5], "label": 0}
    old = {"ts": START + 5, "probs": [0.1, 0.1, 0.8], "label": 2}
    config = write_logs(tmp_path / "logs", [*predictions, (START + 330, after), (START + 330, old)],
                        labels)
    steps = replay_json(config, "--step", "1m")
    assert [s["ts"] for s in steps][-2:] == [START + 300, START + 360]
    late = [by_series(s["metrics"])[("drift_monitor_lines_total",
                                     (("source", "preds"), ("status", "late")))] for s in steps]
    # Read after the line at START + 330, so after the step at START + 300 was shown.
    assert late == [0] * (len(steps) - 1) + [1]
    class_c = sum(1 for _, line in [*predictions, *labels, (0, old)]
                  if isinstance(line, dict) and line.get("label") == 2)
    final = by_series(steps[-1]["metrics"])
    assert final[("model_drift_labels_total", (("class", "c"), ("model", "m")))] == class_c


def test_openmetrics_has_every_step_timestamped_and_labelled_for_backfill(tmp_path):
    predictions, labels = stream(tmp_path, seconds=200)
    config = write_logs(tmp_path / "logs", predictions, labels)
    steps = replay_json(config, "--step", "1m")
    out = run_cli("replay", "--config", str(config), "--step", "1m", "--openmetrics",
                  "--instance", "shard-1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("# EOF\n")
    seen: dict[tuple, float] = {}
    for family in text_string_to_metric_families(out.stdout):
        assert family.name.startswith(("model_drift_", "drift_monitor_lines",
                                       "drift_monitor_rejected_lines")), family.name
        for s in family.samples:
            labels_ = dict(s.labels)
            assert (labels_.pop("job"), labels_.pop("instance")) == ("drift-monitor", "shard-1")
            seen[(float(s.timestamp), s.name, tuple(sorted(labels_.items())))] = s.value
    want = {(float(step["ts"]), *key): value
            for step in steps for key, value in by_series(step["metrics"]).items()}
    assert seen == want


def test_openmetrics_needs_a_step_and_a_step_must_be_a_duration(tmp_path):
    config = write_logs(tmp_path / "logs", *stream(tmp_path, seconds=10))
    assert run_cli("replay", "--config", str(config), "--openmetrics").returncode == 2
    assert run_cli("replay", "--config", str(config), "--step", "soon").returncode == 2
    assert run_cli("replay", "--config", str(config), "--step", "0s").returncode == 2
    assert run_cli("replay", "--config", str(config), "--step", "1m", "--json",
                   "--openmetrics").returncode == 2


def test_json_reports_lines_per_status_and_rejections_per_reason(tmp_path):
    predictions, labels = stream(tmp_path, seconds=100)
    (final,) = replay_json(write_logs(tmp_path / "logs", predictions, labels))
    metrics = by_series(final["metrics"])
    assert metrics[("drift_monitor_lines_total", (("source", "preds"), ("status", "ok")))] == 101
    assert metrics[("drift_monitor_lines_total",
                    (("source", "preds"), ("status", "rejected")))] == 4
    assert metrics[("drift_monitor_rejected_lines_total",
                    (("reason", "not_json"), ("source", "preds")))] == 2


def test_table_run_summarises_lines_and_rejections_on_stderr(tmp_path):
    predictions, labels = stream(tmp_path, seconds=100)
    out = run_cli("replay", "--config", str(write_logs(tmp_path / "logs", predictions, labels)))
    assert out.returncode == 0, out.stderr
    assert "source preds: ok=101 rejected=4 late=0 (rejected: not_json=2 bad_sum=2)" in out.stderr
    assert f"source feedback: ok={len(labels)} rejected=0 late=0\n" in out.stderr
    assert "source preds" not in out.stdout


def test_table_says_why_it_shows_dashes(tmp_path):
    append(tmp_path / "p.jsonl", [{"ts": START + i, "probs": [0.3, 0.7], "label": i % 2}
                                  for i in range(10)])
    config = write_config(tmp_path, {
        "sources": [{"name": "p", "path": str(tmp_path / "p.jsonl"), "model": "m"}],
        "models": {"m": {"classes": ["a", "b"], "windows": ["1h"], "min_samples": 100}}})
    out = run_cli("replay", "--config", str(config))
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("m "))
    assert row.split()[4:] == ["-"] * 5
    assert "fewer than min_samples=100 predictions" in out.stdout


def test_table_never_prints_a_negative_zero(tmp_path):
    append(tmp_path / "p.jsonl", [{"ts": START + i, "probs": [0.9, 0.1], "label": 0}
                                  for i in range(50)])
    config = write_config(tmp_path, {
        "sources": [{"name": "p", "path": str(tmp_path / "p.jsonl"), "model": "m"}],
        "models": {"m": {"classes": ["a", "b"], "windows": ["1h"], "min_samples": 10}}})
    out = run_cli("replay", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert "reference entropy 0.000000 nats" in out.stdout
    assert "-0.000000" not in out.stdout
    assert "min_samples" not in out.stdout  # no dashes, no note


def test_demo_prints_the_table_replay_prints(tmp_path):
    """demo and replay share the table (and demo no longer imports the CLI)."""
    out = run_cli("demo", "--duration", "5", "--port", "0", timeout_s=60)
    assert out.returncode == 0, out.stderr
    assert "model  window" in out.stdout and "fraud: reference entropy" in out.stdout


def test_rejection_log_lines_name_the_offending_value(tmp_path):
    append(tmp_path / "p.jsonl", [{"ts": START, "model": "m", "probs": [0.5, 0.6]},
                                  {"ts": START, "model": "mystery", "probs": [0.5, 0.5]},
                                  {"ts": START, "model": "m", "probs": [0.5, 0.5]}])
    config = write_config(tmp_path, {
        "sources": [{"name": "p", "path": str(tmp_path / "p.jsonl")}],
        "models": {"m": {"classes": ["a", "b"]}}})
    out = run_cli("replay", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert "reason=bad_sum suppressed=0 (sum 1.1, sum_tolerance 0.001)" in out.stderr
    assert "reason=unknown_model suppressed=0 (model 'mystery')" in out.stderr
