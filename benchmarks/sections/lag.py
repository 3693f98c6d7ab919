"""Live lag: a writer appends at a fixed rate while /metrics is polled."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from bisect import bisect_left
from pathlib import Path

import numpy as np

from benchmarks.common import (
    LOAD_CPU,
    SCRIPT,
    Sizes,
    Table,
    count,
    generate,
    now_ms,
    one_model_config,
    pinned_daemon,
    running,
    spawn,
)


def writer(src: str, dst: str, rate_lps: int, seconds: float, record: str) -> None:
    """Appends src's lines to dst at `rate_lps`, one batch every 10 ms, and records
    (monotonic time after the write, lines written so far) per batch."""
    data = Path(src).read_bytes()
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1
    total = min(len(ends), int(rate_lps * seconds))
    batches = max(1, int(seconds / 0.01))
    marks: list[tuple[float, int]] = []
    fd = os.open(dst, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = time.monotonic()
        done = 0
        for i in range(1, batches + 1):
            due = start + i * 0.01
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            upto = total * i // batches
            if upto > done:
                lo = int(ends[done - 1]) if done else 0
                view = memoryview(data)[lo:int(ends[upto - 1])]
                while view:
                    view = view[os.write(fd, view):]
                done = upto
                marks.append((time.monotonic(), done))
    finally:
        os.close(fd)
    Path(record).write_text(json.dumps({"marks": marks, "elapsed": time.monotonic() - start}))



def run(work: Path, sizes: Sizes, table: Table) -> None:
    """Live daemon (K=2, 1 model) with a writer appending at a fixed rate; lag of each
    batch = first /metrics scrape showing its lines minus its write time."""
    folder = work / "lag"
    folder.mkdir()
    total = int(sizes.lag_rate * sizes.lag_seconds)
    source = folder / "source.jsonl"
    # Event times advance with the wall clock as the writer goes: live windows.
    generate(source, total, 2, seed=7, t0_ms=now_ms() + 1000,
             per_ms=max(1, sizes.lag_rate // 1000))
    log = folder / "live.jsonl"
    log.touch()
    daemon = pinned_daemon(folder, one_model_config(log, 2, folder / "state", checkpoint_interval="1s",
                                             poll_interval="1s"))
    record = folder / "marks.json"
    scrapes: list[tuple[float, float]] = []
    with running(daemon):
        writer_proc = spawn([sys.executable, str(SCRIPT), "--writer", str(source), str(log),
                             str(sizes.lag_rate), str(sizes.lag_seconds), str(record)], LOAD_CPU)
        deadline = time.monotonic() + sizes.lag_seconds + 60
        counted = 0.0
        while time.monotonic() < deadline:
            t_before = time.monotonic()
            counted = count(daemon)
            scrapes.append((time.monotonic(), counted))
            if counted >= total:
                break
            time.sleep(max(0.0, 0.05 - (time.monotonic() - t_before)))
        writer_proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    if writer_proc.returncode != 0:
        raise RuntimeError(f"writer exited {writer_proc.returncode}")
    marks = json.loads(record.read_text())
    elapsed = marks["elapsed"]
    lags = []
    counts = [c for _, c in scrapes]
    for t_write, cumulative in marks["marks"]:
        i = bisect_left(counts, cumulative)
        lags.append(scrapes[i][0] - t_write if i < len(scrapes) else math.inf)
    lags.sort()
    p50 = lags[len(lags) // 2]
    p99 = lags[min(len(lags) - 1, math.ceil(0.99 * len(lags)) - 1)]
    kept_up = counted >= total
    achieved = total / elapsed
    table.add(f"live writer ({sizes.lag_rate:,} lines/s for {sizes.lag_seconds:g}s)",
              f"{total:,} lines in {elapsed:.2f}s ({achieved:,.0f} lines/s achieved)",
              f"{sizes.lag_rate:,} lines/s", achieved >= 0.95 * sizes.lag_rate)
    table.add("live lag write -> /metrics (p50 / p99 / max)",
              f"{p50:.2f} / {p99:.2f} / {lags[-1]:.2f} s", "p99 < 2 s", p99 < 2.0)
    table.add("live daemon kept up (final count == written)",
              f"{counted:,.0f} of {total:,}", "all", kept_up)
    shutil.rmtree(folder)
