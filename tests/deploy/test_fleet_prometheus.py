"""Fleet-wide drift through a real Prometheus, end to end.

Two daemons (`python -m monitor run`) each tail one shard of a generated log set; a
Prometheus on loopback scrapes both every second as the job drift-monitor and evaluates
the shipped recording rules (deploy/prometheus/rules/fleet.yml) every second. The fleet
KL divergence and cross-entropy it records must equal what one daemon computes over the
whole set (`python -m monitor replay --json` on both shards), and a numpy oracle over the
generated lines. The same Prometheus then answers every PromQL expression of the Grafana
dashboard.

The shards differ (traffic mix, label rates, size), so the fleet value is not an average
of the two daemons' values: it has to come from adding their counters. Some lines carry
no label, one class is never labelled (A_i = 0 terms), and a few lines are older than the
5m window (late: in the reference and the 1h window, not in 5m), so the cumulative fleet
value equals one daemon's window="1h" gauge, and not its 5m one.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from tests.deploy.conftest import (
    ALERT_RULES,
    DASHBOARD,
    FLEET_RULES,
    Harness,
    PrometheusAPI,
    Samples,
    dashboard_queries,
    replay,
    sample,
    wait_until,
    write_yaml,
)

pytestmark = pytest.mark.slow

CLASSES = ("legit", "fraud", "review")
EPSILON = 1e-12
MODEL = {"classes": list(CLASSES), "windows": ["5m", "1h"], "min_samples": 1}


@dataclass(frozen=True)
class Shard:
    name: str
    size: int
    alpha: tuple[float, ...]     # Dirichlet parameters of the model's outputs
    label_p: tuple[float, ...]   # label distribution; "review" is never a label
    late: int                    # lines 400-900 s old: before the 5m window


SHARDS = (
    Shard("a", 1400, (6.0, 3.0, 1.0), (0.75, 0.25, 0.0), late=30),
    Shard("b", 500, (2.0, 2.0, 1.0), (0.35, 0.65, 0.0), late=20),
)
LATE_ALPHA = (1.0, 1.0, 8.0)
BAD_LINES = ("not json at all", '{"probs": [0.5, 0.5]}', '{"probs": [-0.2, 0.7, 0.5]}')


def generate(shard: Shard, seed: int, now: float) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Log lines, and the valid lines' probability rows and labels (-1: none)."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(shard.alpha, size=shard.size)
    # The late lines come from a different traffic mix, so leaving them out shows.
    probs[: shard.late] = rng.dirichlet(LATE_ALPHA, size=shard.late)
    labels = rng.choice(len(CLASSES), size=shard.size, p=shard.label_p)
    labels[rng.random(shard.size) < 0.2] = -1
    ages = rng.uniform(1.0, 30.0, size=shard.size)
    ages[: shard.late] = rng.uniform(400.0, 900.0, size=shard.late)
    lines = []
    for i in range(shard.size):
        record: dict[str, Any] = {"ts": now - float(ages[i]), "model": "fraud",
                                  "id": f"{shard.name}-{i}", "probs": probs[i].tolist()}
        if labels[i] >= 0:
            record["label"] = int(labels[i])
        lines.append(json.dumps(record))
    lines[100:100] = BAD_LINES
    return lines, probs, labels


def divergences(label_counts: np.ndarray, probability_sums: np.ndarray,
                predictions: float) -> dict[str, float]:
    """KL(A||B), H(A,B), S(A) as DESIGN.md defines them (B floored and renormalised)."""
    a = label_counts / label_counts.sum()
    b = np.maximum(probability_sums / predictions, EPSILON)
    b = b / b.sum()
    nz = a > 0
    return {
        "kl": float(np.sum(a[nz] * np.log(a[nz] / b[nz]))),
        "cross_entropy": float(-np.sum(a[nz] * np.log(b[nz]))),
        "entropy": float(-np.sum(a[nz] * np.log(a[nz]))),
    }


@dataclass
class Fleet:
    prometheus: PrometheusAPI
    oracle: dict[str, float]
    replay: Samples
    predictions: int


@pytest.fixture(scope="module")
def fleet(harness: Harness) -> Fleet:
    logs = harness.path("logs-in", "x").parent
    sources = [{"name": f"shard-{s.name}", "path": str(logs / f"predictions-{s.name}-*.jsonl"),
                "model": "fraud"} for s in SHARDS]
    targets = [harness.start_daemon(f"daemon-{s.name}", {"sources": [source],
                                                         "models": {"fraud": MODEL}})
               for s, source in zip(SHARDS, sources)]
    prometheus = harness.start_prometheus(harness.prometheus_config(
        [url.removeprefix("http://") for url in targets], [FLEET_RULES, ALERT_RULES]))

    # Every daemon exports its counters at 0 from start-up. Let Prometheus see those zeros
    # before any event, or increase() would lose the first values (the windowed rules).
    wait_until(lambda: prometheus.scalar(
        'count(model_drift_predictions_total{job="drift-monitor"} == 0)') == len(SHARDS),
        timeout_s=20, what="both daemons scraped with their counters at 0")

    now = time.time()
    all_probs, all_labels = [], []
    for seed, shard in enumerate(SHARDS):
        lines, probs, labels = generate(shard, seed, now)
        (logs / f"predictions-{shard.name}-1.jsonl").write_text("\n".join(lines) + "\n")
        all_probs.append(probs)
        all_labels.append(labels)
    probs = np.concatenate(all_probs)
    labels = np.concatenate(all_labels)
    label_counts = np.bincount(labels[labels >= 0], minlength=len(CLASSES)).astype(float)
    oracle = divergences(label_counts, probs.sum(axis=0), len(probs))

    replay_config = write_yaml(harness.path("replay", "config.yaml"), {
        "state_dir": str(harness.path("replay", "state")), "sources": sources,
        "models": {"fraud": MODEL}})
    one_daemon = replay(replay_config)

    wait_until(lambda: prometheus.scalar(
        'sum(model_drift_predictions_total{job="drift-monitor"})') == len(probs),
        timeout_s=30, what=f"Prometheus to see all {len(probs)} predictions")
    return Fleet(prometheus, oracle, one_daemon, len(probs))


def fleet_value(fleet: Fleet, record: str, window: str = "") -> float | None:
    return fleet.prometheus.scalar(f'{record}{{model="fraud", window="{window}"}}')


def test_replay_of_both_shards_agrees_with_the_oracle(fleet):
    one = fleet.replay
    assert sample(one, "model_drift_predictions_total", model="fraud") == fleet.predictions
    one_daemon = {
        "kl": sample(one, "model_drift_kl_divergence", model="fraud", window="1h"),
        "cross_entropy": sample(one, "model_drift_cross_entropy", model="fraud", window="1h"),
        "entropy": sample(one, "model_drift_reference_entropy", model="fraud"),
    }
    assert one_daemon == pytest.approx(fleet.oracle, abs=1e-9)
    # The late lines are not in the 5m window, so there B differs.
    kl_5m = sample(one, "model_drift_kl_divergence", model="fraud", window="5m")
    assert abs(kl_5m - fleet.oracle["kl"]) > 1e-3


def test_fleet_counters_in_replay_give_the_oracle(fleet):
    """The three _total counters are all the fleet rules need."""
    one = fleet.replay
    labels = np.array([sample(one, "model_drift_labels_total", model="fraud", **{"class": c})
                       for c in CLASSES])
    sums = np.array([sample(one, "model_drift_probability_total", model="fraud", **{"class": c})
                     for c in CLASSES])
    predictions = sample(one, "model_drift_predictions_total", model="fraud")
    assert labels[2] == 0, "review is never a label: its A term must count as 0"
    assert divergences(labels, sums, predictions) == pytest.approx(fleet.oracle, abs=1e-9)


def test_fleet_kl_and_cross_entropy_equal_one_daemon_over_all_logs(fleet):
    expected = {
        "model_drift:fleet_kl_divergence": fleet.oracle["kl"],
        "model_drift:fleet_cross_entropy": fleet.oracle["cross_entropy"],
    }
    one_daemon = {
        "model_drift:fleet_kl_divergence": sample(
            fleet.replay, "model_drift_kl_divergence", model="fraud", window="1h"),
        "model_drift:fleet_cross_entropy": sample(
            fleet.replay, "model_drift_cross_entropy", model="fraud", window="1h"),
    }

    def recorded() -> dict[str, float | None]:
        return {record: fleet_value(fleet, record) for record in expected}

    def matches() -> bool:
        got = recorded()
        return all(got[r] is not None and abs(got[r] - expected[r]) < 1e-6 for r in expected)

    try:
        wait_until(matches, timeout_s=15, what="the fleet rules to match one daemon")
    except AssertionError as error:
        raise AssertionError(f"{error}: recorded {recorded()}, expected {expected}") from None
    got = recorded()
    for record in expected:
        assert got[record] == pytest.approx(one_daemon[record], abs=1e-6)
    entropy = fleet.prometheus.scalar('model_drift:fleet_reference_entropy{model="fraud"}')
    assert entropy == pytest.approx(fleet.oracle["entropy"], abs=1e-6)


def test_fleet_value_is_not_an_average_of_the_daemons(fleet):
    per_daemon = fleet.prometheus.values(
        'model_drift_kl_divergence{job="drift-monitor", model="fraud", window="1h"}')
    assert len(per_daemon) == len(SHARDS)
    average = sum(per_daemon.values()) / len(per_daemon)
    assert abs(average - fleet.oracle["kl"]) > 1e-2


def test_windowed_fleet_values_come_from_increase_over_the_window(fleet):
    """Each windowed value is KL(A_fleet || B) with B from the daemons' summed increase()
    at the rule's evaluation time. Prometheus extrapolates each daemon's increase()
    separately, so it is close to the cumulative value, not equal to it."""
    prometheus = fleet.prometheus

    def recomputed(window: str) -> tuple[float, float] | None:
        # A range selector returns the recorded samples with their own timestamps.
        (series,) = prometheus.query(
            f'model_drift:fleet_kl_divergence{{model="fraud", window="{window}"}}[5s]') or [None]
        if series is None:
            return None
        at, recorded = (float(value) for value in series["values"][-1])
        sums = {s["metric"]["class"]: float(s["value"][1]) for s in prometheus.query(
            'sum by (class) (increase(model_drift_probability_total'
            f'{{job="drift-monitor", model="fraud"}}[{window}]))', at=at)}
        (predictions,) = prometheus.query(
            f'sum(increase(model_drift_predictions_total{{job="drift-monitor"}}[{window}]))',
            at=at)
        labels = {s["metric"]["class"]: float(s["value"][1]) for s in prometheus.query(
            'sum by (class) (model_drift_labels_total{job="drift-monitor", model="fraud"})',
            at=at)}
        expected = divergences(np.array([labels[c] for c in CLASSES]),
                               np.array([sums[c] for c in CLASSES]),
                               float(predictions["value"][1]))["kl"]
        return recorded, expected

    for window in ("5m", "1h"):
        # A scrape committed just after a rule evaluation, stamped just before it, can
        # change the recomputation: retry until both read the same samples.
        pair = wait_until(lambda w=window: (r := recomputed(w)) and abs(r[0] - r[1]) < 1e-9 and r,
                          timeout_s=15, what=f"the {window} fleet KL to match increase()")
        assert pair[0] == pytest.approx(fleet.oracle["kl"], abs=0.05)


SUBSTITUTIONS = {
    # Grafana's values for a one-hour dashboard at this Prometheus's 1 s scrape interval.
    "__rate_interval": "15s",
    "__interval": "2s",
    "__range": "1h",
    "instance": ".*",
    "model": "fraud",
    # Not 1h: that window holds every line, as the reference does, and the shift p-values
    # (a window against the reference without it) are then undefined, so not exported.
    "window": "5m",
}
VARIABLE = re.compile(r"\$(" + "|".join(sorted(SUBSTITUTIONS, key=len, reverse=True)) + r")\b")


def substitute(expr: str) -> str:
    return VARIABLE.sub(lambda match: SUBSTITUTIONS[match[1]], expr)


def test_every_dashboard_query_evaluates(fleet):
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = dashboard_queries(dashboard)
    assert len(queries) > 20
    end = time.time()
    problems = []
    for query in queries:
        expr = substitute(query.expr)
        assert "$" not in expr.replace("$1", ""), f"{query.where}: unsubstituted in {expr}"
        if query.instant:
            result = fleet.prometheus.query(expr, at=end)
        else:
            result = fleet.prometheus.query_range(expr, end - 60, end, step_s=2)
        if query.label is not None:
            if not any(query.label in series["metric"] for series in result):
                problems.append(f"{query.where}: lists no {query.label}")
        elif not result and not query.where.startswith("annotation"):
            # Annotations read ALERTS, empty while nothing fires; everything else has data.
            problems.append(f"{query.where}: no data for {expr}")
    assert not problems, "\n".join(problems)


def test_distribution_panel_shows_labels_beside_each_windows_output(fleet):
    (panel,) = [p for p in json.loads(DASHBOARD.read_text())["panels"]
                if p["type"] == "barchart"]
    result = fleet.prometheus.query(substitute(panel["targets"][0]["expr"]).replace(
        'window=~"5m"', 'window=~".*"'))
    columns = {(s["metric"]["distribution"], s["metric"]["class"]) for s in result}
    assert {d for d, _ in columns} == {"reference labels (A)", "output, 5m window (B)",
                                       "output, 1h window (B)", "output, cumulative (B)"}
    assert columns == {(d, c) for d, _ in columns for c in CLASSES}
