#!/usr/bin/env python3
"""When would the shipped alerts have fired? Evaluates every alert rule of a rule file over
a time range through a Prometheus's query API, as the rule manager would have, `for:`
included, and prints each firing: alert, series, start and end.

Prometheus never evaluates alert rules over history it did not see live (backfilled
blocks included), so this is how to look at last month's logs through the shipped rules:

    drift-monitor replay --config CONFIG --step 1m --openmetrics > history.om
    promtool tsdb create-blocks-from openmetrics history.om DATA_DIR
    prometheus --storage.tsdb.path=DATA_DIR --storage.tsdb.retention.time=10y ...
    python deploy/prometheus/backtest.py --prometheus http://127.0.0.1:9090 \\
        --start 2026-11-01T00:00:00Z --end 2026-12-01T00:00:00Z

Each evaluation at time t is an instant query at t (a range query with the evaluation
interval as its step gives exactly those). A series present in the result becomes
pending at its first evaluation and fires once it has been present at every evaluation
for `for:`; it resolves at the first evaluation without it. Stdlib and PyYAML only.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

RULES = Path(__file__).resolve().parent / "rules" / "alerts.yml"
MAX_POINTS = 10_000  # Prometheus answers at most 11,000 points per series and range query
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")


def duration_s(text: str) -> float:
    """A Prometheus duration (`10m`, `1h30m`) in seconds."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def timestamp(text: str) -> float:
    """RFC 3339 or Unix seconds."""
    try:
        return float(text)
    except ValueError:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()


@dataclass(frozen=True)
class Rule:
    alert: str
    expr: str
    for_s: float
    interval_s: float
    labels: tuple[tuple[str, str], ...]  # the rule's own labels, added to every alert


def alert_rules(path: Path, default_interval_s: float) -> list[Rule]:
    groups = yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    return [Rule(rule["alert"], rule["expr"], duration_s(rule.get("for", "0s")),
                 duration_s(group["interval"]) if "interval" in group else default_interval_s,
                 tuple(sorted(rule.get("labels", {}).items())))
            for group in groups for rule in group["rules"] if "alert" in rule]


@dataclass(frozen=True)
class Firing:
    alert: str
    labels: dict[str, str]
    start: float  # the evaluation at which it fired
    end: float | None  # the first evaluation without it; None while still firing at the end
    active_since: float  # when it became pending


def _ms(t: float) -> int:
    return round(t * 1000)  # Prometheus's resolution, so that times compare exactly


def firings(alert: str, for_s: float, present: dict[tuple[tuple[str, str], ...], set[int]],
            evaluations: list[float]) -> Iterator[Firing]:
    """Replays the rule manager's states over `evaluations` (ascending): `present` holds,
    per series, the evaluation times (ms) at which the expression returned it."""
    for key, times in present.items():
        active = fired = math.nan  # when it became pending, and fired; NaN while absent
        for t in evaluations:
            if _ms(t) in times:
                if math.isnan(active):
                    active = t
                if math.isnan(fired) and t - active >= for_s:
                    fired = t
            else:
                if not math.isnan(fired):
                    yield Firing(alert, dict(key), fired, t, active)
                active = fired = math.nan
        if not math.isnan(fired):
            yield Firing(alert, dict(key), fired, None, active)


class Prometheus:
    def __init__(self, base_url: str, timeout_s: float = 120) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.opener = urllib.request.build_opener()

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> list[dict]:
        params = urllib.parse.urlencode({"query": expr, "start": start, "end": end,
                                         "step": step_s})
        url = f"{self.base_url}/api/v1/query_range?{params}"
        try:
            with self.opener.open(url, timeout=self.timeout_s) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            answer = json.loads(error.read() or b"{}")
        if answer.get("status") != "success":
            raise RuntimeError(f"{expr!r}: {answer.get('errorType')}: {answer.get('error')}")
        return answer["data"]["result"]


def evaluation_times(start: float, end: float, interval_s: float) -> list[float]:
    first = math.ceil(start / interval_s) * interval_s
    count = math.floor((end - first) / interval_s + 1e-9) + 1
    return [first + i * interval_s for i in range(max(count, 0))]


def backtest(prometheus: Prometheus, rules: Iterable[Rule], start: float,
             end: float) -> list[Firing]:
    out: list[Firing] = []
    for rule in rules:
        evaluations = evaluation_times(start, end, rule.interval_s)
        present: dict[tuple[tuple[str, str], ...], set[int]] = {}
        for i in range(0, len(evaluations), MAX_POINTS):
            chunk = evaluations[i:i + MAX_POINTS]
            for series in prometheus.query_range(rule.expr, chunk[0], chunk[-1], rule.interval_s):
                # An alert's labels: the series' without its name, and the rule's.
                labels = {k: v for k, v in series["metric"].items() if k != "__name__"}
                key = tuple(sorted({**labels, **dict(rule.labels)}.items()))
                present.setdefault(key, set()).update(_ms(float(t)) for t, _ in series["values"])
        out.extend(firings(rule.alert, rule.for_s, present, evaluations))
    return sorted(out, key=lambda f: (f.start, f.alert, sorted(f.labels.items())))


def _iso(t: float | None) -> str:
    if t is None:
        return "(still firing)"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090",
                        help="base URL of the Prometheus that holds the series")
    parser.add_argument("--rules", type=Path, default=RULES,
                        help="alert rule file (default: the shipped alerts.yml)")
    parser.add_argument("--start", required=True, type=timestamp, help="RFC 3339 or Unix seconds")
    parser.add_argument("--end", required=True, type=timestamp, help="RFC 3339 or Unix seconds")
    parser.add_argument("--interval", default="1m", type=duration_s,
                        help="evaluation interval of groups that set none (Prometheus's "
                        "evaluation_interval; default 1m)")
    parser.add_argument("--alert", action="append",
                        help="only this alert (repeatable; default: every alert rule)")
    parser.add_argument("--json", action="store_true", help="JSON Lines, one firing a line")
    args = parser.parse_args(argv)
    rules = [r for r in alert_rules(args.rules, args.interval)
             if args.alert is None or r.alert in args.alert]
    try:
        found = backtest(Prometheus(args.prometheus), rules, args.start, args.end)
    except (RuntimeError, OSError) as error:
        print(f"backtest: {error}", file=sys.stderr)
        return 1
    for f in found:
        if args.json:
            print(json.dumps({"alert": f.alert, "labels": f.labels, "start": f.start,
                              "end": f.end, "active_since": f.active_since}))
        else:
            labels = ", ".join(f'{k}="{v}"' for k, v in sorted(f.labels.items()))
            print(f"{f.alert}{{{labels}}} fired {_iso(f.start)} until {_iso(f.end)} "
                  f"(pending since {_iso(f.active_since)})")
    if not args.json:
        print(f"{len(found)} firings of {len(rules)} alert rules from {_iso(args.start)} "
              f"to {_iso(args.end)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
