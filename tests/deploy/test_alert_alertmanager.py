"""The shipped drift alert, end to end: logs -> daemon -> Prometheus -> Alertmanager.

One daemon tails two generated logs: model "fraud", whose outputs drift in the last
minute (the model starts predicting fraud far more often than it happens), and model
"steady", whose outputs keep matching its labels. Prometheus evaluates the shipped alert
rules and sends to a real Alertmanager on loopback; ModelOutputShift must reach it for
fraud's 5m window, and nothing for steady.

The shipped rules wait `for: 10m` before firing. This test rewrites a copy of
deploy/prometheus/rules/alerts.yml with `for: 2s` on ModelOutputShift only; its expression,
thresholds and sample guard are the shipped ones, and every other alert is unchanged.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.deploy.conftest import ALERT_RULES, Harness, http_get, wait_until, write_yaml

pytestmark = pytest.mark.slow

TESTED_ALERT = "ModelOutputShift"
SHORT_FOR = "2s"
MODEL = {"classes": ["legit", "fraud"], "windows": ["5m", "1h"], "min_samples": 100}


def lines(rng: np.random.Generator, n: int, ages: tuple[float, float], model: str,
          drifted: bool) -> list[str]:
    """A calibrated model: P(fraud) = p, label ~ Bernoulli(p), so B matches A. Drifted,
    it outputs 1 - p: mean output 0.7 against a fraud rate of 0.3."""
    p = rng.beta(3.0, 7.0, size=n)
    labels = (rng.random(n) < p).astype(int)
    if drifted:
        p = 1.0 - p
    ts = time.time() - rng.uniform(*ages, size=n)
    return [json.dumps({"ts": float(ts[i]), "model": model, "id": f"{model}-{drifted}-{i}",
                        "probs": [1.0 - float(p[i]), float(p[i])], "label": int(labels[i])})
            for i in range(n)]


def short_for_rules(path: Path) -> Path:
    rules = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))
    (rule,) = [rule for group in rules["groups"] for rule in group["rules"]
               if rule.get("alert") == TESTED_ALERT]
    rule["for"] = SHORT_FOR
    return write_yaml(path, rules)


def alertmanager_alerts(base_url: str) -> list[dict[str, Any]]:
    status, body = http_get(f"{base_url}/api/v2/alerts")
    assert status == 200, body
    return json.loads(body)


def test_drift_fires_the_shipped_alert_into_alertmanager_and_steady_fires_nothing(
        harness: Harness):
    logs = harness.path("logs-in", "x").parent
    daemon = harness.start_daemon("daemon", {
        "sources": [{"name": "fraud", "path": str(logs / "fraud-*.jsonl"), "model": "fraud"},
                    {"name": "steady", "path": str(logs / "steady-*.jsonl"), "model": "steady"}],
        "models": {"fraud": MODEL, "steady": MODEL},
    })
    alertmanager = harness.start_alertmanager()
    prometheus = harness.start_prometheus(harness.prometheus_config(
        [daemon.removeprefix("http://")],
        [short_for_rules(harness.path("rules", "alerts.yml"))],
        alertmanager=alertmanager))

    rng = np.random.default_rng(42)
    # fraud: 50 minutes of calibrated history (all before the 5m window), then a minute
    # of drifted output; steady: two calibrated minutes.
    (logs / "fraud-1.jsonl").write_text("\n".join(
        lines(rng, 3000, (600, 3000), "fraud", drifted=False)
        + lines(rng, 800, (1, 60), "fraud", drifted=True)) + "\n")
    (logs / "steady-1.jsonl").write_text("\n".join(
        lines(rng, 2000, (1, 120), "steady", drifted=False)) + "\n")

    def fired() -> list[dict[str, Any]]:
        return [alert for alert in alertmanager_alerts(alertmanager)
                if alert["labels"].get("alertname") == TESTED_ALERT]

    try:
        (alert,) = wait_until(fired, timeout_s=45, what=f"{TESTED_ALERT} in Alertmanager")
    except AssertionError as error:
        raise AssertionError(f"{error}\nPrometheus ALERTS: {prometheus.query('ALERTS')}\n"
                             f"{harness.log_tail('daemon')}") from None
    assert alert["status"]["state"] == "active"
    assert alert["labels"] == {"alertname": TESTED_ALERT, "severity": "warning",
                               "job": "drift-monitor", "instance": daemon.removeprefix("http://"),
                               "model": "fraud", "window": "5m"}
    assert "fraud" in alert["annotations"]["summary"]

    # Give steady the same chance: its KL has been evaluated for more than `for:` since.
    wait_until(lambda: prometheus.scalar(
        'count_over_time(model_drift_prediction_kl_divergence{job="drift-monitor", '
        'model="steady", window="5m"}[1m])') >= 5, timeout_s=20,
        what="steady's prediction KL to be scraped 5 times")
    # Neither drift alert is even pending for steady, and nothing fires for it. (Its
    # ModelNoEvents may be pending: no event arrived since Prometheus's first scrape.)
    assert prometheus.query(
        'ALERTS{model="steady", alertname=~"ModelLabelShift|ModelOutputShift|ModelQualityDrop"}'
    ) == []
    assert prometheus.query('ALERTS{model="steady", alertstate="firing"}') == []
    # ...and not for want of samples: steady passes the alert's guards, with a low KL.
    steady_kl = prometheus.scalar(
        'model_drift_prediction_kl_divergence{model="steady", window="5m"}')
    assert steady_kl is not None and steady_kl < 0.01
    assert prometheus.scalar(
        'model_drift_window_predictions{model="steady", window="5m"}') == 2000
    # fraud's 1h window holds its whole history, as the reference does: no output shift.
    fraud_1h = prometheus.scalar(
        'model_drift_prediction_kl_divergence{model="fraud", window="1h"}')
    assert fraud_1h is not None and fraud_1h < 0.1

    firing = {(a["labels"]["alertname"], a["labels"].get("model"), a["labels"].get("window"))
              for a in alertmanager_alerts(alertmanager)}
    assert firing == {(TESTED_ALERT, "fraud", "5m")}
