"""The shipped Prometheus and Alertmanager files, checked by their own tools.

`promtool test rules` runs the unit tests in deploy/prometheus/tests/: every alert and
every fleet recording rule has one.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.deploy.conftest import ALERT_RULES, DEPLOY_DIR, FLEET_RULES, RULES_DIR, rules_of

PROMETHEUS_DIR = DEPLOY_DIR / "prometheus"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.test.yml"))

# A raw metric the daemons export, in a PromQL expression.
RAW_METRIC = re.compile(r"\b(model_drift_[a-z_]+|drift_monitor_[a-z_]+|up)\b(\{[^}]*\})?")


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_rule_files_are_shipped():
    assert [path.name for path in RULE_FILES] == ["alerts.yml", "fleet.yml"]
    assert RULE_TESTS, "no promtool rule tests in deploy/prometheus/tests/"


def test_scrape_config_and_its_rule_files_pass_promtool(promtool):
    result = run(promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout + result.stderr


def test_scrape_job_is_named_drift_monitor():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert [job["job_name"] for job in config["scrape_configs"]] == ["drift-monitor"]


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda path: path.name)
def test_rule_file_passes_promtool_check_rules(promtool, path):
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda path: path.name)
def test_rule_unit_tests_pass(promtool, path):
    result = run(promtool, "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test():
    alert_names = {rule["alert"] for rule in rules_of(ALERT_RULES)}
    tested = {case["alertname"]
              for path in RULE_TESTS
              for test in yaml.safe_load(path.read_text())["tests"]
              for case in test.get("alert_rule_test", [])}
    assert alert_names == {"ModelLabelShift", "ModelOutputShift", "ModelQualityDrop", "ModelNoEvents",
                           "DriftMonitorDown", "DriftMonitorAbsent",
                           "DriftMonitorRejectedLinesHigh", "DriftMonitorCheckpointStale",
                           "DriftMonitorSourceWithoutFiles"}
    assert alert_names <= tested, f"alerts without a test: {alert_names - tested}"


def test_every_recorded_series_is_checked_by_a_unit_test():
    recorded = {rule["record"] for rule in rules_of(FLEET_RULES)}
    exprs = " ".join(case["expr"]
                     for path in RULE_TESTS
                     for test in yaml.safe_load(path.read_text())["tests"]
                     for case in test.get("promql_expr_test", []))
    assert recorded == {"model_drift:fleet_label_distribution",
                        "model_drift:fleet_output_distribution",
                        "model_drift:fleet_reference_entropy",
                        "model_drift:fleet_cross_entropy",
                        "model_drift:fleet_kl_divergence"}
    assert all(name in exprs for name in recorded), \
        f"recorded without a test: {[name for name in recorded if name not in exprs]}"


def test_windowed_fleet_rules_carry_their_range_as_window_label():
    for rule in rules_of(FLEET_RULES):
        window = rule.get("labels", {}).get("window")
        ranges = set(re.findall(r"\[(\w+)\]", rule["expr"]))
        assert ranges == ({window} if window else set()), rule["record"]


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda path: path.name)
def test_rules_select_the_drift_monitor_job(path):
    for rule in rules_of(path):
        for name, selector in RAW_METRIC.findall(rule["expr"]):
            assert 'job="drift-monitor"' in selector, \
                f"{rule.get('alert') or rule.get('record')}: {name}{selector} selects no job"


def test_alertmanager_config_passes_amtool(amtool):
    result = run(amtool, "check-config", str(PROMETHEUS_DIR / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
