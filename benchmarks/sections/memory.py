"""Peak RSS of replay at two log sizes."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from benchmarks.common import (
    BIG_FILE_BYTES_PER_LINE,
    DUT_CPU,
    Sizes,
    Table,
    budget_s,
    generate,
    many_models_config,
    mib,
    note,
    rate,
    run_timed,
    write_config,
)


def run(work: Path, sizes: Sizes, table: Table) -> dict[int, float]:
    """Peak RSS of replay over 100 models x 10 classes x 3 windows, at two log sizes."""
    folder = work / "memory"
    folder.mkdir()
    small, big = sizes.memory
    need = big * BIG_FILE_BYTES_PER_LINE * 1.1
    free = shutil.disk_usage(folder).free
    results: dict[int, tuple[int, float]] = {}
    rates: dict[int, float] = {}
    cmd = [sys.executable, "-m", "monitor", "replay", "--json", "--config"]
    (folder / "empty.jsonl").touch()
    empty = write_config(folder / "empty.yaml",
                         many_models_config(folder / "empty.jsonl", folder / "state"))
    startup = min(run_timed([*cmd, str(empty)], DUT_CPU, 60).wall_s for _ in range(3))
    for n in (small, big):
        if free < need:
            table.add(f"replay peak RSS, {n:,} lines", "SKIPPED",
                      "< 150 MiB", f"SKIPPED: {free / 2**30:.1f} GiB free, need {need / 2**30:.1f}")
            continue
        log = folder / "log.jsonl"
        t = time.perf_counter()
        nbytes = generate(log, n, 10, models=100, seed=21)
        note(f"memory: generated {n:,} lines, {nbytes / 2**20:,.0f} MiB in "
             f"{time.perf_counter() - t:.1f}s")
        config = write_config(folder / "config.yaml", many_models_config(log, folder / "state"))
        done = run_timed([*cmd, str(config)], DUT_CPU, budget_s(n))
        log.unlink()
        results[n] = (done.maxrss_kib, done.wall_s)
        net = done.wall_s - startup if done.wall_s - startup >= 0.25 * done.wall_s else done.wall_s
        rates[n] = n / net
        table.add(f"replay peak RSS, 100 models x 10 classes, {n:,} lines",
                  f"{mib(done.maxrss_kib)} ({rate(n, net)} net of start-up)", "< 150 MiB",
                  done.maxrss_kib < 150 * 1024)
    if len(results) == 2:
        growth = results[big][0] / results[small][0] - 1
        table.add(f"RSS growth {small:,} -> {big:,} lines", f"{growth:+.1%}", "within 5%",
                  abs(growth) <= 0.05)
    shutil.rmtree(folder)
    return rates
