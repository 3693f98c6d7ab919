#!/usr/bin/env python3
"""drift-monitor benchmark: replay throughput, baselines, live lag, scrapes, memory, checkpoints.

    python benchmarks/throughput.py            # full run: several minutes, ~2 GB of temp disk
    python benchmarks/throughput.py --quick    # small sizes, under ~90 s (the smoke test)
    python benchmarks/throughput.py --only replay,lag

Everything runs in a temp folder that is deleted at the end, on loopback only. The
program under test (`python -m monitor replay|run`) always runs pinned to one core (the
first allowed CPU), and so do the baselines it is compared with; the load generators (the
log writer, the scrape clients) and this script run on another core when there is one.
Every wait is bounded and every child process is killed on the way out.

Prints a Markdown table `| measurement | result | target | ok |`. Exits 0 even when a
target is missed (the table says so), 1 when a measurement failed with an error.

Internal subcommands (run in pinned child processes by the benchmark itself):
    --baseline naive|floor FILE K   the pandas+scipy way / plain json.loads, prints JSON
    --writer SRC DST RATE SECONDS RECORD   appends SRC's lines to DST at RATE lines/s
    --checkpoint-probe CONFIG       loads a log in-process and times checkpoint writes
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

# Run as a script: the sections import benchmarks.* and tests.harness from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import DUT_CPU, FULL, LOAD_CPU, QUICK, Table, kill_children, note
from benchmarks.sections import checkpoint, idle, lag, memory, replay, scrape


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")),
                   cpu)
    from importlib.metadata import PackageNotFoundError, version

    versions = []
    for name in ("numpy", "msgspec", "pysimdjson", "pandas", "scipy"):
        try:
            versions.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            versions.append(f"{name} missing")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    spec = importlib.util.find_spec("monitor")
    where = os.path.dirname(spec.origin) if spec and spec.origin else "?"
    try:
        commit = subprocess.run(["git", "-C", where, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "."],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        source = f"git {commit}" + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        source = "not a git checkout"
    return (f"Machine: {cpu}, {os.cpu_count()} cores (under test on CPU {DUT_CPU}, load on "
            f"CPU {LOAD_CPU}), Linux {platform.release()}, Python {platform.python_version()}, "
            + ", ".join(versions) + f"\nCode: monitor from {where} ({source}); "
            f"load average {load} at start")


def child(argv: list[str]) -> int:
    """The internal subcommands: print one JSON object on stdout."""
    kind = argv[0]
    if kind == "--baseline" and argv[1] == "naive":
        out = replay.baseline_naive(argv[2], int(argv[3]))
    elif kind == "--baseline" and argv[1] == "floor":
        out = replay.baseline_floor(argv[2])
    elif kind == "--writer":
        lag.writer(argv[1], argv[2], int(argv[3]), float(argv[4]), argv[5])
        return 0
    elif kind == "--checkpoint-probe":
        out = checkpoint.checkpoint_probe(argv[1])
    else:
        print(f"unknown internal subcommand {argv}", file=sys.stderr)
        return 2
    json.dump(out, sys.stdout)
    return 0


SECTIONS = ("replay", "lag", "scrape", "memory", "idle", "checkpoint")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("--baseline", "--writer", "--checkpoint-probe"):
        return child(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (the smoke test)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections: {','.join(SECTIONS)}")
    args = parser.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    sizes = QUICK if args.quick else FULL
    os.sched_setaffinity(0, {LOAD_CPU})
    # SIGTERM (a timeout upstream) unwinds like Ctrl-C: children killed, temp dir removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    table = Table()
    header = machine()
    note(header)
    replay_rate = None
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="drift-bench-"))
    try:
        for name in only:
            note(f"== {name}")
            t = time.monotonic()
            try:
                if name == "memory":
                    replay_rate = memory.run(work, sizes, table).get(sizes.memory[0])
                elif name == "checkpoint":
                    checkpoint.run(work, sizes, table, replay_rate)
                else:
                    {"replay": replay.run, "lag": lag.run, "scrape": scrape.run,
                     "idle": idle.run}[name](work, sizes, table)
            except Exception as exc:
                traceback.print_exc()
                table.errors.append(f"{name}: {exc}")
                table.add(f"{name}", f"ERROR: {str(exc).splitlines()[0][:200]}", "", False)
            finally:
                kill_children()
            note(f"   {name} took {time.monotonic() - t:.1f}s")
    finally:
        kill_children()
        shutil.rmtree(work, ignore_errors=True)
    mode = "quick" if args.quick else "full"
    print(header)
    print(f"Mode: {mode}, {time.monotonic() - started:.0f}s in all.\n")
    print(table.markdown())
    return 1 if table.errors else 0


if __name__ == "__main__":
    sys.exit(main())
