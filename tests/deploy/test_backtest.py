"""deploy/prometheus/backtest.py: the rule manager's `for:` replayed over evaluations, and
the script end to end against a real Prometheus holding backfilled series."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.deploy.conftest import DEPLOY_DIR, Harness, binary

BACKTEST = DEPLOY_DIR / "prometheus" / "backtest.py"
_spec = importlib.util.spec_from_file_location("backtest", BACKTEST)
assert _spec is not None and _spec.loader is not None
backtest = importlib.util.module_from_spec(_spec)
sys.modules["backtest"] = backtest  # its dataclasses look their module up
_spec.loader.exec_module(backtest)

SERIES = (("instance", "a"), ("model", "m"))


def fired(for_s: float, present_at: list[int], until: int = 20) -> list[tuple]:
    evaluations = [60.0 * i for i in range(until + 1)]
    present = {SERIES: {60_000 * i for i in present_at}}
    return [(f.start / 60, None if f.end is None else f.end / 60, f.active_since / 60)
            for f in backtest.firings("A", for_s, present, evaluations)]


def test_fires_once_present_for_the_whole_for_duration_and_resolves_when_absent():
    assert fired(300, list(range(2, 12))) == [(7, 12, 2)]


def test_a_gap_restarts_the_pending_time():
    assert fired(300, [*range(0, 4), *range(5, 11)]) == [(10, 11, 5)]


def test_still_firing_at_the_end_has_no_end():
    assert fired(0, [18, 19, 20]) == [(18, None, 18)]


def test_never_present_long_enough_never_fires():
    assert fired(600, list(range(0, 20, 2))) == []


@pytest.mark.parametrize(("text", "seconds"), [("10m", 600), ("1h30m", 5400), ("90s", 90)])
def test_prometheus_durations(text, seconds):
    assert backtest.duration_s(text) == seconds


def test_script_prints_when_an_alert_would_have_fired_on_backfilled_history(harness: Harness,
                                                                             tmp_path):
    # A gauge above 1 from minute 10 to minute 40 of an hour of history, sampled each minute.
    start = 1_790_000_040  # a multiple of the 1m evaluation interval
    om = tmp_path / "history.om"
    om.write_text("# TYPE level gauge\n" + "".join(
        f'level{{job="drift-monitor",instance="x"}} {2 if 10 <= i < 40 else 0} {start + 60 * i}\n'
        for i in range(60)) + "# EOF\n")
    created = subprocess.run([binary("promtool"), "tsdb", "create-blocks-from", "openmetrics",
                              str(om), str(harness.path("prometheus", "data"))],
                             capture_output=True, text=True, timeout=120, check=False)
    assert created.returncode == 0, created.stderr
    api = harness.start_prometheus(harness.prometheus_config([], []), retention="100y")
    rules = tmp_path / "rules.yml"
    rules.write_text("groups:\n- name: g\n  rules:\n  - alert: LevelHigh\n"
                     "    expr: level{job=\"drift-monitor\"} > 1\n    for: 5m\n")
    result = subprocess.run([sys.executable, str(BACKTEST), "--prometheus", api.base_url,
                             "--rules", str(rules), "--start", str(start),
                             "--end", str(start + 3600), "--json"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    (firing,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert firing["alert"] == "LevelHigh"
    assert firing["labels"] == {"instance": "x", "job": "drift-monitor"}
    assert (firing["active_since"], firing["start"], firing["end"]) == (
        start + 600, start + 900, start + 2400)
