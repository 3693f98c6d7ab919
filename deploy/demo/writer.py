"""Synthetic prediction logs for the docker-compose demo.

A calibrated binary fraud model: each request draws a fraud probability p, and its true
label is fraud with probability p, so the mean output matches the label distribution
(KL near 0). During a drift phase the model over-predicts fraud: p' = p + 0.3 (1 - p),
the labels keep coming from p: the mean output moves far past the 0.1-nat floor of the
shipped ModelOutputShift alert, and log loss past ModelQualityDrop's. Phases follow event time: steady for
--drift-after seconds, drifted for --drift-for seconds, and again.

One shard per --out directory, each file named predictions-YYYYmmddHH.jsonl (UTC hour
of the event), keeping the newest --keep files per shard. Some lines carry no label
(not yet known); one in --bad-every is not JSON, to show rejected lines.

Standard library only, so it runs in the drift-monitor image or any python3:
    python writer.py --out /logs/a --out /logs/b
    python writer.py --out /tmp/a --count 1000      # 1000 lines per shard, then exit
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time
from pathlib import Path
from typing import TextIO

DRIFT_SHIFT = 0.3
LABELLED_FRACTION = 0.8


def fraud_probability(rng: random.Random) -> float:
    """A score distribution with mean 0.1: most requests clearly legit, a few not."""
    return min(0.999, rng.betavariate(0.5, 4.5))


def make_line(rng: random.Random, ts: float, request_id: str, drifted: bool) -> str:
    """One JSON line: probs over [legit, fraud]; label 0/1 or null."""
    p = fraud_probability(rng)
    label = 1 if rng.random() < p else 0
    if drifted:
        p = p + DRIFT_SHIFT * (1.0 - p)
    record = {
        "ts": round(ts, 3),
        "model": "fraud",
        "id": request_id,
        "probs": [1.0 - p, p],
        "label": label if rng.random() < LABELLED_FRACTION else None,
    }
    return json.dumps(record, separators=(",", ":")) + "\n"


def in_drift(elapsed_s: float, drift_after_s: float, drift_for_s: float) -> bool:
    cycle = drift_after_s + drift_for_s
    return drift_for_s > 0 and elapsed_s % cycle >= drift_after_s


class Shard:
    """Appends to one directory's current hourly file, pruning old ones."""

    def __init__(self, directory: Path, keep: int) -> None:
        self.directory = directory
        self.keep = keep
        self.name = ""
        self.file: TextIO | None = None

    def write(self, ts: float, text: str) -> None:
        name = time.strftime("predictions-%Y%m%d%H.jsonl", time.gmtime(ts))
        if name != self.name:
            self.close()
            self.name = name
            self.file = open(self.directory / name, "a", encoding="utf-8")  # noqa: SIM115
            self.prune()
        assert self.file is not None
        self.file.write(text)

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def prune(self) -> None:
        for old in sorted(self.directory.glob("predictions-*.jsonl"))[: -self.keep]:
            old.unlink(missing_ok=True)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, action="append", required=True,
                        help="a shard's directory (repeat for more shards)")
    parser.add_argument("--rate", type=float, default=20.0,
                        help="lines per second per shard (default 20)")
    parser.add_argument("--count", type=int, default=0,
                        help="write this many lines per shard as fast as possible, then exit")
    parser.add_argument("--drift-after", type=float, default=180.0,
                        help="seconds of steady output before each drift (default 180)")
    parser.add_argument("--drift-for", type=float, default=900.0,
                        help="seconds each drift lasts (default 900; 0: never drift)")
    parser.add_argument("--bad-every", type=int, default=500,
                        help="one line in N is not JSON (default 500; 0: none)")
    parser.add_argument("--keep", type=int, default=3, help="files kept per shard")
    parser.add_argument("--seed", type=int, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # As a container's PID 1, SIGTERM's default action is ignored: exit on it.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    rng = random.Random(args.seed)
    shards = [Shard(directory, args.keep) for directory in args.out]
    for directory in args.out:
        directory.mkdir(parents=True, exist_ok=True)
    start = time.time()
    written = 0
    try:
        while args.count == 0 or written < args.count:
            now = time.time()
            drifted = in_drift(now - start, args.drift_after, args.drift_for)
            written += 1
            for index, shard in enumerate(shards):
                if args.bad_every and written % args.bad_every == 0:
                    text = "this is not json\n"
                else:
                    text = make_line(rng, now, f"r-{index}-{written}", drifted)
                shard.write(now, text)
            if args.count == 0:
                for shard in shards:
                    shard.flush()
                time.sleep(1.0 / args.rate)
    except KeyboardInterrupt:
        pass
    finally:
        for shard in shards:
            shard.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
