"""grafana/: the dashboard and its provisioning, checked without Grafana.

The dashboard's queries run against a real Prometheus in test_fleet_prometheus.py; here,
its structure, and its agreement with the metric names and the alert rules.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import (
    ALERT_RULES,
    DASHBOARD,
    FLEET_RULES,
    REPO_ROOT,
    alert_threshold,
    dashboard_queries,
    rules_of,
)

PROVISIONING = REPO_ROOT / "grafana" / "provisioning"

# The metric families of DESIGN.md's table, and Prometheus's own.
EXPORTED = {
    "model_drift_kl_divergence", "model_drift_cross_entropy", "model_drift_reference_entropy",
    "model_drift_prediction_kl_divergence", "model_drift_js_divergence", "model_drift_log_loss",
    "model_drift_window_predictions", "model_drift_window_labels",
    "model_drift_reference_labels", "model_drift_predictions_total",
    "model_drift_labels_total", "model_drift_probability_total",
    "model_drift_last_event_timestamp_seconds", "drift_monitor_lines_total",
    "drift_monitor_rejected_lines_total", "drift_monitor_pending_labels",
    "drift_monitor_label_joins_total", "drift_monitor_label_expired_total",
    "drift_monitor_label_duplicates_total", "drift_monitor_checkpoint_age_seconds",
    "drift_monitor_checkpoint_failures_total", "drift_monitor_build_info",
    "model_drift_label_kl_divergence", "model_drift_label_shift_pvalue",
    "model_drift_prediction_shift_pvalue", "model_drift_reference_log_loss",
    "model_drift_log_loss_shift_pvalue", "model_drift_calibration_pvalue",
    "model_drift_brier_score", "model_drift_accuracy", "model_drift_expected_calibration_error",
    "model_drift_log_loss_sum_total",
    "up", "ALERTS",
}
METRIC = re.compile(r"\b(model_drift[:_][a-z_]+|drift_monitor_[a-z_]+|up|ALERTS)\b(?=\s*[{\[)])")


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def panels_using(metric: str) -> list[dict[str, Any]]:
    return [panel for panel in panels()
            if any(re.search(rf"\b{re.escape(metric)}\{{", target["expr"])
                   for target in panel["targets"])]


def panel_using(metric: str) -> dict[str, Any]:
    (panel,) = panels_using(metric)
    return panel


def drawn_thresholds(panel: dict[str, Any]) -> list[float]:
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["custom"]["thresholdsStyle"]["mode"] in {"line", "line+area", "dashed"}
    return [step["value"] for step in defaults["thresholds"]["steps"] if step["value"] is not None]


def test_dashboard_identity():
    board = dashboard()
    assert board["uid"] == "drift-monitor"
    assert board["title"]
    assert board["id"] is None, "a provisioned dashboard must not pin a database id"


def test_template_variables_select_datasource_daemon_model_and_window():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert list(variables) == ["datasource", "instance", "model", "window"]
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("instance", "model", "window"):
        assert variables[name]["multi"] and variables[name]["includeAll"]
        assert variables[name]["allValue"] == ".*"
        assert 'job="drift-monitor"' in variables[name]["query"]


def test_every_panel_queries_the_selected_datasource():
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_panel_ids_are_unique_and_the_grid_has_no_overlap():
    board = dashboard()["panels"]
    assert len({panel["id"] for panel in board}) == len(board)
    cells: dict[tuple[int, int], str] = {}
    for panel in board:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_queries_use_only_exported_or_recorded_metric_names():
    recorded = {rule["record"] for rule in rules_of(FLEET_RULES)}
    used = {name for query in dashboard_queries(dashboard()) for name in METRIC.findall(query.expr)}
    assert used <= EXPORTED | recorded, used - EXPORTED - recorded


@pytest.mark.parametrize("metric", [
    "model_drift_kl_divergence", "model_drift_cross_entropy", "model_drift_reference_entropy",
    "model_drift_js_divergence", "model_drift_prediction_kl_divergence", "model_drift_log_loss",
    "model_drift:fleet_kl_divergence", "model_drift:fleet_cross_entropy",
    "model_drift:fleet_label_distribution", "model_drift:fleet_output_distribution",
    "model_drift_predictions_total", "model_drift_labels_total",
    "drift_monitor_rejected_lines_total", "drift_monitor_pending_labels",
    "drift_monitor_checkpoint_age_seconds",
])
def test_a_panel_shows(metric):
    shown_in = panels_using(metric)
    assert shown_in
    if metric.startswith("model_drift"):
        for panel in shown_in:
            assert all("$model" in t["expr"] for t in panel["targets"]), panel["title"]


@pytest.mark.parametrize("metric", [
    "model_drift_kl_divergence", "model_drift_cross_entropy", "model_drift_js_divergence",
    "model_drift_prediction_kl_divergence", "model_drift_log_loss",
])
def test_window_panels_follow_the_window_variable(metric):
    for panel in panels_using(metric):
        assert all("$window" in target["expr"] for target in panel["targets"]
                   if "window" in target["legendFormat"]), panel["title"]


def pvalue_threshold(alert: str, metric: str) -> float:
    """The significance level alert `alert` compares `metric{...}` with (`< x`)."""
    match = re.search(rf"{re.escape(metric)}\{{[^}}]*\}}\s*<\s*([0-9.e-]+)",
                      next(r for r in rules_of(ALERT_RULES) if r.get("alert") == alert)["expr"])
    assert match, f"{alert}: no significance level on {metric}"
    return float(match[1])


@pytest.mark.parametrize(("alert", "effect", "pvalue"), [
    ("ModelLabelShift", "model_drift_label_kl_divergence", "model_drift_label_shift_pvalue"),
    ("ModelOutputShift", "model_drift_prediction_kl_divergence",
     "model_drift_prediction_shift_pvalue"),
    ("ModelQualityDrop", "model_drift_reference_log_loss", "model_drift_log_loss_shift_pvalue"),
])
def test_drift_panels_draw_the_alert_thresholds(alert, effect, pvalue):
    floor = [p for p in panels_using(effect) if p["fieldConfig"]["defaults"]["custom"][
        "thresholdsStyle"]["mode"] != "off"]
    assert [drawn_thresholds(panel) for panel in floor] == [[alert_threshold(alert, effect)]]
    assert drawn_thresholds(panel_using(pvalue)) == [pvalue_threshold(alert, pvalue)]


def test_no_threshold_is_drawn_where_no_alert_looks():
    for metric in ("model_drift_kl_divergence", "model_drift_calibration_pvalue",
                   "model_drift_accuracy", "model_drift_expected_calibration_error",
                   "model_drift_brier_score"):
        panel = panel_using(metric)
        assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "off"


def test_health_panels_draw_the_alert_thresholds():
    min_predictions = alert_threshold("ModelOutputShift", "model_drift_window_predictions")
    assert min_predictions == alert_threshold("ModelLabelShift", "model_drift_window_labels")
    stale = alert_threshold("DriftMonitorCheckpointStale", "drift_monitor_checkpoint_age_seconds")
    assert drawn_thresholds(panel_using("model_drift_window_predictions")) == [min_predictions]
    assert drawn_thresholds(panel_using("drift_monitor_checkpoint_age_seconds")) == [stale]


def test_distribution_panel_puts_labels_beside_output_per_class():
    panel = panel_using("model_drift:fleet_label_distribution")
    assert panel["type"] == "barchart"
    assert panel["repeat"] == "model"
    (transformation,) = panel["transformations"]
    assert transformation["id"] == "groupingToMatrix"
    assert transformation["options"]["rowField"] == "class"
    assert transformation["options"]["columnField"] == "distribution"
    (target,) = panel["targets"]
    assert target["instant"] and target["format"] == "table"
    assert "model_drift:fleet_output_distribution" in target["expr"]


def test_annotations_mark_where_the_shipped_alerts_fired():
    alerts = {rule["alert"] for rule in rules_of(ALERT_RULES)}
    annotations = [a for a in dashboard()["annotations"]["list"] if "expr" in a]
    assert annotations
    shown: set[str] = set()
    for annotation in annotations:
        assert annotation["enable"] is True
        match = re.fullmatch(r'ALERTS\{alertstate="firing", alertname=~"([^"]+)".*\}',
                             annotation["expr"])
        assert match, annotation["expr"]
        pattern = re.compile(match[1])
        names = {alert for alert in alerts if pattern.fullmatch(alert)}
        assert names, f"{annotation['name']} matches no shipped alert"
        shown |= names
    assert shown == alerts


def test_provisioning_declares_the_datasource_the_dashboard_expects():
    (datasource,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())[
        "datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["uid"] == "prometheus"
    assert datasource["isDefault"] is True


def test_provisioning_loads_dashboards_from_files():
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "drift-monitor.yaml").read_text())[
        "providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
