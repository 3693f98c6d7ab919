"""The v0.2 alerting statistics end to end: exported from a real daemon, kept across a
SIGHUP reload and a restart, and printed by replay --json."""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest

from tests.system.conftest import append, model_config, run_cli, source, value, wait_until

WINDOW_STATS = ("model_drift_label_kl_divergence", "model_drift_label_shift_pvalue",
                "model_drift_prediction_shift_pvalue", "model_drift_log_loss_shift_pvalue",
                "model_drift_calibration_pvalue", "model_drift_brier_score",
                "model_drift_accuracy", "model_drift_expected_calibration_error",
                "model_drift_log_loss")


def stats_of(samples, windows) -> dict:
    out = {(name, w): value(samples, name, model="fraud", window=w)
           for name in WINDOW_STATS for w in windows}
    for name in ("model_drift_reference_log_loss", "model_drift_log_loss_sum_total"):
        out[(name, None)] = value(samples, name, model="fraud")
    return out


def test_alerting_statistics_survive_sighup_and_restart_and_match_replay(daemon_factory, logs):
    rng = np.random.default_rng(11)
    now = time.time()
    probs = rng.dirichlet([2.0, 1.0], size=400)
    # 150 events well before the 1h window (reference only), 250 in it; a gap of 1000 s
    # around the window's start, so that the wall clock moving on changes nothing.
    ts = np.r_[np.linspace(now - 6000, now - 4600, 150), np.linspace(now - 2600, now - 200, 250)]
    lines = [{"ts": float(t), "probs": p.tolist(), "label": int(rng.integers(2))}
             for t, p in zip(ts, probs)]
    append(logs / "p-1.jsonl", lines)
    config = {"sources": [source(logs / "p-*.jsonl")],
              "models": {"fraud": model_config(windows=["1h", {"count": 150}], min_samples=20)}}
    d = daemon_factory(config).start()
    d.wait_value("model_drift_predictions_total", 400, model="fraud")
    windows = ("1h", "count:150")
    before = stats_of(d.scrape(), windows)
    assert all(v is not None for v in before.values()), before
    losses = [-np.log(max(p[c["label"]], 1e-12)) for p, c in zip(probs, lines)]
    assert before[("model_drift_log_loss_sum_total", None)] == pytest.approx(sum(losses), rel=1e-9)

    d.write_config({**d.config, "checkpoint_interval": "300ms"})  # same models: state kept
    d.send(signal.SIGHUP)
    wait_until(lambda: "config reloaded" in d.log(), 10)
    assert stats_of(d.scrape(), windows) == pytest.approx(before, rel=1e-12)
    assert d.stop() == 0

    restarted = d.start()
    assert stats_of(restarted.scrape(), windows) == pytest.approx(before, rel=1e-12)
    assert restarted.stop() == 0

    out = run_cli("replay", "--config", str(d.config_path), "--json")
    assert out.returncode == 0, out.stderr
    replayed = {(m["name"], m["labels"].get("window")): m["value"]
                for m in json.loads(out.stdout)["metrics"] if m["labels"].get("model") == "fraud"}
    assert {key: replayed.get(key) for key in before} == pytest.approx(before, rel=1e-9)


def test_the_log_loss_counter_is_exported_at_zero_from_start_up(daemon_factory, logs):
    append(logs / "p-1.jsonl", [])
    d = daemon_factory({"sources": [source(logs / "p-*.jsonl")],
                        "models": {"fraud": model_config()}}).start()
    assert d.value("model_drift_log_loss_sum_total", model="fraud") == 0.0
    assert d.stop() == 0
