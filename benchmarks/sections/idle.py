"""CPU of a caught-up daemon watching many files."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from benchmarks.common import (
    Sizes,
    Table,
    generate,
    mib,
    now_ms,
    one_model_config,
    pinned_daemon,
    proc_status_kib,
    proc_threads_cpu_s,
    running,
    wait_count,
)


def run(work: Path, sizes: Sizes, table: Table) -> None:
    """A glob matching many files that never change: CPU of the caught-up daemon."""
    folder = work / "idle"
    (folder / "logs").mkdir(parents=True)
    stamp = now_ms()
    for i in range(sizes.idle_files):
        generate(folder / "logs" / f"f{i:04d}.jsonl", 1, 2, seed=31, t0_ms=stamp, first_id=i)
    daemon = pinned_daemon(folder, one_model_config(folder / "logs" / "*.jsonl", 2, folder / "state",
                                             checkpoint_interval="1s", poll_interval="1s"))
    with running(daemon):
        wait_count(daemon, sizes.idle_files, 120, 0.2)
        time.sleep(2.0)  # the last checkpoint after catching up
        fds = len(os.listdir(f"/proc/{daemon.pid}/fd"))
        c0, t0 = proc_threads_cpu_s(daemon.pid), time.monotonic()
        threads0 = set(os.listdir(f"/proc/{daemon.pid}/task"))
        time.sleep(sizes.idle_seconds)
        c1, t1 = proc_threads_cpu_s(daemon.pid), time.monotonic()
        if set(os.listdir(f"/proc/{daemon.pid}/task")) != threads0:
            raise RuntimeError("threads came and went while idle: schedstat sums do not hold")
        rss = proc_status_kib(daemon.pid, "VmRSS")
    share = (c1 - c0) / (t1 - t0)
    table.add(f"idle CPU, {sizes.idle_files:,} watched files, {sizes.idle_seconds:g}s",
              f"{share:.2%} of a core ({fds:,} fds open, RSS {mib(rss)})", "< 1%", share < 0.01)
    shutil.rmtree(folder)
