"""`replay --step --openmetrics`, backfilled with the real promtool into a real Prometheus:
what Prometheus then holds is exactly what replay printed, sample by sample."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from benchmarks.alerting import streams
from tests.deploy.conftest import Harness, binary, run_monitor

pytestmark = pytest.mark.slow

SCENARIO = streams.Scenario("label", per_day=20_000, days=1, label_delay_s=300)


def test_backfilled_openmetrics_queried_back_equals_the_replay(harness: Harness):
    paths = streams.write(SCENARIO, harness.path("logs", "x").parent)
    config = harness.path("config.yaml")
    config.write_text(yaml.safe_dump(streams.config(SCENARIO, paths)), encoding="utf-8")
    result = run_monitor("replay", "--config", str(config), "--step", "5m", "--openmetrics",
                         "--instance", "history", timeout_s=300)
    assert result.returncode == 0, result.stderr
    openmetrics = harness.path("history.om")
    openmetrics.write_text(result.stdout, encoding="utf-8")
    want: dict[tuple, float] = {}
    for family in text_string_to_metric_families(result.stdout):
        for s in family.samples:
            want[(s.name, tuple(sorted(s.labels.items())), float(s.timestamp))] = s.value
    names = {name for name, _, _ in want}
    assert {"model_drift_kl_divergence", "model_drift_window_labels",
            "drift_monitor_lines_total", "drift_monitor_rejected_lines_total"} <= names
    assert len({ts for _, _, ts in want}) == 24 * 12 + 1  # 5m steps over the day, both ends

    created = subprocess.run([binary("promtool"), "tsdb", "create-blocks-from", "openmetrics",
                              str(openmetrics), str(harness.path("prometheus", "data"))],
                             capture_output=True, text=True, timeout=300, check=False)
    assert created.returncode == 0, created.stdout + created.stderr
    api = harness.start_prometheus(harness.prometheus_config([], []), retention="100y")

    got: dict[tuple, float] = {}
    last = max(ts for _, _, ts in want)
    for series in api.query('{job="drift-monitor"}[2d]', at=last):
        labels = dict(series["metric"])
        name = labels.pop("__name__")
        for ts, value in series["values"]:
            got[(name, tuple(sorted(labels.items())), float(ts))] = float(value)
    assert got == want

