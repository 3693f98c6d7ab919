"""Delayed ground truth joined by id, through the real daemon, across a restart."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from tests.system.conftest import append, source, value, wait_until


def test_delayed_labels_join_by_id_across_a_restart(daemon_factory, logs):
    rng = random.Random(5)
    now = time.time()
    n = 400
    probs = np.random.default_rng(5).dirichlet([2.0, 1.0, 1.0], size=n)
    truth = [rng.randrange(3) for _ in range(n)]
    predictions = [{"ts": now - 100 + i * 0.1, "id": f"r-{i}", "probs": probs[i].tolist()}
                   for i in range(n)]
    # Labels: 70% arrive, some twice; some before their prediction (written first).
    label_lines = []
    for i in range(n):
        if rng.random() < 0.7:
            label_lines.append({"id": f"r-{i}", "label": ["a", "b", "c"][truth[i]]})
            if rng.random() < 0.1:
                label_lines.append({"id": f"r-{i}", "label": (truth[i] + 1) % 3})
    label_lines.append({"id": "never-predicted", "label": 0})
    rng.shuffle(label_lines)
    config = {
        "sources": [source(logs / "pred-*.jsonl", model="m")],
        "labels": [{"name": "feedback", "path": str(logs / "labels-*.jsonl"), "model": "m",
                    "join_ttl": "1h", "max_pending": 10000}],
        "models": {"m": {"classes": ["a", "b", "c"], "windows": ["1h", {"count": 1000}],
                         "min_samples": 1}},
    }
    d = daemon_factory(config)
    half_p, half_l = n // 2, len(label_lines) // 2
    append(logs / "labels-1.jsonl", label_lines[:half_l])
    append(logs / "pred-1.jsonl", predictions[:half_p])
    d.start()
    d.wait_value("model_drift_predictions_total", half_p, model="m")
    assert d.stop() == 0  # a restart with joins pending on both sides
    append(logs / "pred-1.jsonl", predictions[half_p:])
    append(logs / "labels-1.jsonl", label_lines[half_l:])
    d.start()
    d.wait_value("model_drift_predictions_total", n, model="m")
    wait_until(lambda: d.value("drift_monitor_lines_total", source="feedback", status="ok")
               == len(label_lines), 10)
    time.sleep(0.5)
    samples = d.scrape()

    # Brute force: the first label line of each predicted id counts; later ones are duplicates.
    first: dict[str, int] = {}
    duplicates = 0
    for line in label_lines:
        label = line["label"] if isinstance(line["label"], int) else "abc".index(line["label"])
        if line["id"] in first:
            duplicates += 1
        else:
            first[line["id"]] = label
    joined = [(i, first[f"r-{i}"]) for i in range(n) if f"r-{i}" in first]
    counts = np.bincount([c for _, c in joined], minlength=3)
    for cls, count in zip("abc", counts):
        assert value(samples, "model_drift_labels_total", model="m", **{"class": cls}) == count
    assert value(samples, "drift_monitor_label_joins_total", model="m") == len(joined)
    assert value(samples, "drift_monitor_label_duplicates_total", source="feedback") == duplicates
    assert value(samples, "drift_monitor_pending_labels", model="m") == n - len(joined)
    assert value(samples, "model_drift_window_labels", model="m", window="1h") == len(joined)
    logloss = np.mean([-np.log(max(probs[i][c], 1e-12)) for i, c in joined])
    for window in ("1h", "count:1000"):
        assert value(samples, "model_drift_log_loss", model="m", window=window) == pytest.approx(
            logloss, abs=1e-9)
    a = counts / counts.sum()
    b = probs.mean(axis=0)
    kl = float(np.sum(a[a > 0] * np.log(a[a > 0] / b[a > 0])))
    assert value(samples, "model_drift_kl_divergence", model="m", window="1h") == pytest.approx(
        kl, abs=1e-9)
    assert d.stop() == 0


def test_models_beyond_max_models_and_unknown_models_are_rejected(daemon_factory, logs):
    lines = [{"model": f"m{i % 5}", "probs": [0.5, 0.5]} for i in range(20)]
    append(logs / "p.jsonl", lines)
    config = {"max_models": 3, "sources": [source(logs / "p.jsonl", model=None)],
              "models": {"default": {"classes": ["x", "y"], "windows": ["1h"], "min_samples": 1}}}
    del config["sources"][0]["model"]
    d = daemon_factory(config).start()
    wait_until(lambda: d.value("drift_monitor_rejected_lines_total", source="preds",
                               reason="too_many_models") == 8, 10)
    samples = d.scrape()
    for i in range(3):
        assert value(samples, "model_drift_predictions_total", model=f"m{i}") == 4
    assert value(samples, "model_drift_predictions_total", model="m3") is None
    assert d.stop() == 0
