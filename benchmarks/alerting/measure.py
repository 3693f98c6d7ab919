"""What the shipped drift alerts do on realistic streams, end to end through the real tools.

For each scenario (benchmarks/alerting/streams.py): write its logs, `drift-monitor replay
--step 1m --openmetrics` them (instance = the scenario's name), backfill every file with
`promtool tsdb create-blocks-from openmetrics` into one data directory, start a real
Prometheus on it (loopback), and evaluate the shipped alert rules over the whole range
with deploy/prometheus/backtest.py. Prints a Markdown table: detection delay per alert
after the drift starts, and false alarms (firings before the drift, or at all on a
control day).

    python -m benchmarks.alerting.measure                  # the full table (about 20 min)
    python -m benchmarks.alerting.measure --volume 50000   # one volume
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from benchmarks.alerting import streams
from benchmarks.alerting.streams import Scenario

REPO = Path(__file__).resolve().parents[2]
BACKTEST = REPO / "deploy" / "prometheus" / "backtest.py"
DRIFT_ALERTS = ("ModelLabelShift", "ModelOutputShift", "ModelQualityDrop")


def scenarios(volumes: Iterable[int], seed: int = 1) -> list[Scenario]:
    out = []
    for per_day in volumes:
        out += [Scenario("steady", per_day, seed=seed),
                Scenario("cycle", per_day, cycle=0.25, seed=seed)]
        out += [Scenario(kind, per_day, seed=seed) for kind in
                ("label", "covariate_half", "covariate_all", "concept")]
        out += [Scenario(kind, per_day, label_delay_s=600, seed=seed) for kind in
                ("label", "concept")]
        out += [Scenario("cycle", per_day, cycle=0.25, label_delay_s=600, seed=seed)]
    return out


def backfill(scenario: Scenario, work: Path, data_dir: Path, promtool: str) -> None:
    """Logs -> replay --openmetrics -> TSDB blocks in data_dir."""
    folder = work / scenario.name
    paths = streams.write(scenario, folder)
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(streams.config(scenario, paths)), encoding="utf-8")
    openmetrics = folder / "series.om"
    with open(openmetrics, "w", encoding="utf-8") as out:
        subprocess.run([sys.executable, "-m", "monitor", "replay", "--config", str(config),
                        "--step", "1m", "--openmetrics", "--instance", scenario.name],
                       stdout=out, check=True, cwd=REPO)
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "-q",
                    str(openmetrics), str(data_dir)], check=True, capture_output=True)
    for path in folder.iterdir():  # the blocks hold it all now
        path.unlink()


def firings(prometheus_url: str, start: float, end: float) -> list[dict]:
    """deploy/prometheus/backtest.py --json over [start, end]: every firing."""
    result = subprocess.run([sys.executable, str(BACKTEST), "--prometheus", prometheus_url,
                             "--start", str(start), "--end", str(end), "--json"],
                            capture_output=True, text=True, check=True)
    return [json.loads(line) for line in result.stdout.splitlines()]


@dataclass(frozen=True)
class Outcome:
    scenario: Scenario
    delays_min: dict[str, float]  # alert -> minutes from the drift's start to its first firing
    false_alarms: list[dict]  # firings before the drift (all of them on a control)

    @property
    def detected_min(self) -> float | None:
        return min(self.delays_min.values(), default=None)


def outcome(scenario: Scenario, found: list[dict]) -> Outcome:
    mine = [f for f in found if f["labels"].get("instance") == scenario.name
            and f["alert"] in DRIFT_ALERTS]
    drift = scenario.drift_at
    if drift is None:
        return Outcome(scenario, {}, mine)
    delays: dict[str, float] = {}
    for f in mine:
        if f["start"] >= drift:
            delays[f["alert"]] = min(delays.get(f["alert"], float("inf")),
                                     (f["start"] - drift) / 60)
    return Outcome(scenario, delays, [f for f in mine if f["start"] < drift])


def measure(chosen: list[Scenario], root: Path) -> list[Outcome]:
    from tests.deploy.conftest import Harness, binary

    promtool = binary("promtool")
    harness = Harness(root)
    data_dir = harness.path("prometheus", "data")
    data_dir.mkdir(parents=True, exist_ok=True)
    for scenario in chosen:
        started = time.monotonic()
        backfill(scenario, root / "logs", data_dir, promtool)
        print(f"backfilled {scenario.name} in {time.monotonic() - started:.0f}s", file=sys.stderr)
    try:
        api = harness.start_prometheus(harness.prometheus_config([], []), retention="100y")
        found = firings(api.base_url, min(s.start for s in chosen), max(s.end for s in chosen))
    finally:
        harness.stop_all()
    return [outcome(s, found) for s in chosen]


def _labels(s: Scenario) -> str:
    return f"after {s.label_delay_s / 60:.0f} min" if s.label_delay_s else "on the line"


def table(outcomes: list[Outcome]) -> str:
    head = ("| stream | predictions/day | labels | detected after (min) | "
            + " | ".join(DRIFT_ALERTS) + " | false alarms |")
    rows = [head, "|" + "---|" * (5 + len(DRIFT_ALERTS))]
    for o in outcomes:
        s = o.scenario
        kind = s.kind + (f" ±{s.cycle:.0%} day-night" if s.cycle else "")
        if s.drift_at is None:
            detected = "(control)"
            cells = ["-"] * len(DRIFT_ALERTS)
        else:
            detected = "**missed**" if o.detected_min is None else f"{o.detected_min:.0f}"
            cells = [f"{o.delays_min[a]:.0f}" if a in o.delays_min else "-" for a in DRIFT_ALERTS]
        rows.append(f"| {kind} | {s.per_day:,} | {_labels(s)} | {detected} | "
                    + " | ".join(cells) + f" | {len(o.false_alarms)} in {s.days} days |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volume", type=int, action="append",
                        help="predictions per day (repeatable; default 50000 and 500000)")
    parser.add_argument("--only", action="append", metavar="NAME_PART",
                        help="only the streams whose name contains this (repeatable)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    args = parser.parse_args(argv)
    chosen = [s for s in scenarios(args.volume or [50_000, 500_000], args.seed)
              if args.only is None or any(part in s.name for part in args.only)]
    if args.keep is not None:
        outcomes = measure(chosen, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="alerting-") as root:
            outcomes = measure(chosen, Path(root))
    sys.stdout.write(table(outcomes))
    for o in outcomes:
        for f in o.false_alarms:
            print(f"false alarm {o.scenario.name}: {json.dumps(f)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
