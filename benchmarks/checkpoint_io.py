#!/usr/bin/env python3
"""What checkpoints cost: bytes written to disk per day, and checkpoint latency.

    python benchmarks/checkpoint_io.py            # 5,000 lines/s, 1M pending ids: ~3 min
    python benchmarks/checkpoint_io.py --quick    # 500 lines/s, 30k pending: seconds

The daemon's own objects run in this process on `config/example.yaml` (paths and
`state_dir` moved to a temp folder), driven by a simulated clock: each simulated second
the aggregator ingests one second of traffic (`--rate` prediction lines with request
ids, 30% of them labelled by a label line 60 s later; with `--no-ids`, lines without ids
and 30% labelled inline), then the daemon's checkpoint step runs, as its main loop does
every `checkpoint_interval` (1 s). First a warm-up fills the join store (70% of ids never
get a label, so it runs full at `max_pending` = 1M), then one snapshot, then `--seconds`
measured checkpoints.

Bytes are counted two ways, which agree: the sum of the sizes of what the checkpoint
wrote to the state files (snapshot, journal records), and `write_bytes` of
/proc/self/io over the measured loop (the process writes nothing else then). Per day is
that per simulated second x 86,400, plus compactions: the journal is compacted into a
snapshot when it passes COMPACT_RATIO x the snapshot, so a day of records costs
(day / threshold) snapshots more, or one per `max_inputs` join inputs (which bounds
what a restart replays), whichever is more; both parts are printed, and the time of a
restore after the measured loop, scaled to a journal at its compaction point. "Before" is the v0.1 design,
the whole state rewritten every second: the snapshot's size x 86,400, and its latency.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.shell import checkpoint  # noqa: E402
from monitor.shell.config import load_config  # noqa: E402
from monitor.shell.daemon import Daemon, Reader  # noqa: E402

LABEL_DELAY_S = 60
LABELLED = 0.3


class SimClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def second_of_traffic(second: int, t0: float, rate: int, ids: bool,
                      rng: np.random.Generator) -> tuple[bytes, int, bytes, int]:
    """One second of prediction lines and the label lines due then (for the
    predictions of LABEL_DELAY_S earlier)."""
    p = rng.uniform(0, 1, rate).round(6)
    ts = t0 + second + np.arange(rate) / rate
    first = second * rate
    labelled = rng.uniform(0, 1, rate) < LABELLED
    lines = []
    for i in range(rate):
        extra = f',"id":"r-{first + i}"' if ids else (
            f',"label":{int(p[i] < 0.5)}' if labelled[i] else "")
        lines.append(f'{{"ts":{ts[i]:.4f},"model":"fraud","probs":[{p[i]},{1 - p[i]:.6f}]{extra}}}')
    preds = ("\n".join(lines) + "\n").encode()
    labels, n = b"", 0
    if ids and second >= LABEL_DELAY_S:
        back = (second - LABEL_DELAY_S) * rate
        chosen = np.flatnonzero(np.random.default_rng(second).uniform(0, 1, rate) < LABELLED)
        labels = "".join(f'{{"id":"r-{back + i}","label":{i % 2},"ts":{ts[0]:.1f}}}\n'
                         for i in chosen).encode()
        n = len(chosen)
    return preds, rate, labels, n


def run(rate: int, seconds: int, warmup: int, ids: bool, max_pending: int,
        windows: list | None = None) -> dict:
    work = Path(tempfile.mkdtemp(prefix="drift-ckpt-"))
    raw = yaml.safe_load((ROOT / "config" / "example.yaml").read_text())
    (work / "logs").mkdir()
    (work / "logs" / "predictions-1.jsonl").write_bytes(b"")
    raw["state_dir"] = str(work / "state")
    raw["sources"][0]["path"] = str(work / "logs" / "predictions-*.jsonl")
    raw["labels"][0]["path"] = str(work / "logs" / "labels-*.jsonl")
    raw["labels"][0]["max_pending"] = max_pending
    if windows is not None:
        raw["models"]["fraud"]["windows"] = windows
    (work / "config.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(str(work / "config.yaml"))
    t0 = time.time() - warmup - seconds - 10
    clock = SimClock(t0)
    checkpoint.make_state_dir(raw["state_dir"])
    daemon = Daemon(config, None, clock=clock)
    daemon.reader = Reader(config, daemon.aggregator)
    daemon.reader.scan()
    aggregator = daemon.aggregator
    source, label_source = config.sources[0], config.labels[0]
    rng = np.random.default_rng(7)

    def one_second(second: int) -> None:
        preds, n, labels, m = second_of_traffic(second, t0, rate, ids, rng)
        clock.t = t0 + second + 1
        aggregator.ingest_predictions(source, preds, n, clock.t, clock.t)
        if m:
            aggregator.ingest_labels(label_source, labels, m, clock.t, clock.t)

    for second in range(warmup):
        one_second(second)
    pending = sum(s.pending for s in aggregator.stores.values())
    rss = rss_mib()
    # The v0.1 cost: the whole state, every second (three full writes, timed).
    full_s = []
    for _ in range(3):
        daemon.journal.broken = True
        full_s.append(daemon.write_checkpoint())
    snapshot_bytes = daemon.journal.snapshot_bytes
    written_before, io_before = daemon.journal.written, write_bytes()
    latencies, snapshots = [], 0
    for second in range(warmup, warmup + seconds):
        one_second(second)
        wanted = daemon.journal.wants_snapshot()
        elapsed = daemon.write_checkpoint()
        if wanted:
            snapshots += 1
        else:
            latencies.append(elapsed)
    written = daemon.journal.written - written_before
    io = write_bytes() - io_before
    per_s = written / seconds
    threshold = max(checkpoint.MIN_COMPACT_BYTES, checkpoint.COMPACT_RATIO * snapshot_bytes)
    records_day = per_s * 86400
    # Compaction comes when the journal passes `threshold` bytes or holds more than
    # `max_inputs` join inputs (each prediction with an id and each label line is one).
    inputs_day = (rate + (LABELLED * rate if ids else 0)) * 86400 if ids else 0
    compactions_day = max(records_day / threshold, inputs_day / daemon.journal.max_inputs)
    compaction_day = compactions_day * snapshot_bytes
    # Restore after a crash at this point: the snapshot, then every record so far.
    journal_bytes = daemon.journal.journal_bytes
    daemon.reader.close()
    fresh = Daemon(config, None, clock=clock)
    started = time.perf_counter()
    fresh.restore()
    restore_s = time.perf_counter() - started
    assert fresh.reader is not None
    fresh.reader.close()
    return {
        "restore_s": restore_s, "journal_bytes": journal_bytes,
        "restore_at_threshold_s": restore_s * min(
            threshold / max(journal_bytes, 1),
            daemon.journal.max_inputs / max(inputs_day / 86400 * seconds, 1)),
        "compactions_day": compactions_day,
        "rate": rate, "ids": ids, "seconds": seconds, "pending": pending,
        "rss_mib_after_warmup": rss, "snapshot_bytes": snapshot_bytes,
        "before_gb_day": snapshot_bytes * 86400 / 1e9,
        "before_latency_ms": statistics.median(full_s) * 1e3,
        "written_bytes": written, "proc_write_bytes": io, "snapshots_in_window": snapshots,
        "records_gb_day": records_day / 1e9, "compaction_gb_day": compaction_day / 1e9,
        "after_gb_day": (records_day + compaction_day) / 1e9,
        "p50_ms": float(np.percentile(latencies, 50) * 1e3),
        "p99_ms": float(np.percentile(latencies, 99) * 1e3),
        "max_ms": float(max(latencies) * 1e3),
        "compaction_ms": statistics.median(full_s) * 1e3,
        "windows": raw["models"]["fraud"]["windows"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        cases = [(500, 30, 100, True, 30_000), (500, 30, 5, False, 30_000),
                 (500, 30, 5, False, 30_000, ["5m", "1h"])]
    else:
        # 300 s of warm-up at 3,500 unlabelled ids/s fill 1M pending.
        cases = [(5000, 300, 300, True, 1_000_000), (5000, 300, 30, False, 1_000_000),
                 (5000, 300, 30, False, 1_000_000, ["5m", "1h"])]
    results = [run(*case) for case in cases]
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print("| case | state (snapshot) | before: full rewrite each second | after: journal + "
          "compaction | checkpoint p50 / p99 / max | compaction | written: files / write_bytes |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        case = (f"{r['rate']:,} lines/s, " + (f"ids, {r['pending']:,} pending" if r["ids"]
                                             else "no ids")) + f", windows {r['windows']}"
        print(f"| {case} | {r['snapshot_bytes'] / 1e6:,.1f} MB | {r['before_gb_day']:,.1f} GB/day,"
              f" {r['before_latency_ms']:.0f} ms | {r['after_gb_day']:,.2f} GB/day "
              f"({r['records_gb_day']:,.2f} records + {r['compaction_gb_day']:,.2f} compaction) | "
              f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} / {r['max_ms']:.1f} ms | "
              f"{r['compaction_ms']:.0f} ms | {r['written_bytes'] / 1e6:,.1f} MB / "
              f"{r['proc_write_bytes'] / 1e6:,.1f} MB in {r['seconds']} s |")
    for r in results:
        scaled = (f" (at the compaction point, about {r['restore_at_threshold_s']:.0f} s)"
                  if r["journal_bytes"] > 1e6 else "")  # else fixed costs dominate
        print(f"restore of snapshot + {r['journal_bytes'] / 1e6:,.1f} MB of journal: "
              f"{r['restore_s']:.1f} s{scaled}")
    print(f"RSS after warm-up (ids case): {results[0]['rss_mib_after_warmup']:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
