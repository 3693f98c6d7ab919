"""The shipped drift alerts, end to end on realistic streams (a reduced version of
benchmarks/alerting/measure.py): a scikit-learn model's logs with a label shift at noon,
and a control day whose class mix follows a +-25 % day-night cycle, each replayed with
`--step 1m --openmetrics`, backfilled with the real promtool into a real Prometheus, and
the shipped rules evaluated over them with deploy/prometheus/backtest.py."""

from __future__ import annotations

import pytest

from benchmarks.alerting.measure import measure
from benchmarks.alerting.streams import Scenario

pytestmark = pytest.mark.slow

DRIFT = Scenario("label", per_day=50_000, days=1)
CONTROL = Scenario("cycle", per_day=50_000, days=1, cycle=0.25)


def test_rules_fire_within_an_hour_of_a_label_shift_and_stay_silent_on_a_day_night_cycle(
        tmp_path):
    drift, control = measure([DRIFT, CONTROL], tmp_path)
    assert drift.false_alarms == [] and control.false_alarms == []
    assert drift.detected_min is not None and drift.detected_min <= 60, drift.delays_min
    assert "ModelLabelShift" in drift.delays_min
