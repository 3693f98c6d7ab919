"""/metrics on 100 models: latency at rest, and ingestion with and without scraping."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from benchmarks.common import (
    LIVE_PER_MS,
    Sizes,
    Table,
    budget_s,
    generate,
    get,
    ingest,
    many_models_config,
    ms,
    now_ms,
    percentile,
    pinned_daemon,
    proc_cpu_s,
    rate,
    running,
    wait_count,
)


def run(work: Path, sizes: Sizes, table: Table) -> None:
    """100 models x 3 windows x 10 classes: /metrics latency at rest, then ingestion of
    a log with and without a client scraping in a tight loop."""
    folder = work / "scrape"
    (folder / "logs").mkdir(parents=True)
    # Event times: 10 lines per ms ending about now, so every window holds data.
    start_ms = now_ms() - (sizes.scrape_lines + 2 * sizes.scrape_feed) // LIVE_PER_MS
    generate(folder / "logs" / "a.jsonl", sizes.scrape_lines, 10, models=100, seed=11,
             t0_ms=start_ms, per_ms=LIVE_PER_MS)
    feeds = []
    for i, name in enumerate(("b", "c")):
        first = sizes.scrape_lines + i * sizes.scrape_feed
        staged = folder / f"{name}.staged"
        nbytes = generate(staged, sizes.scrape_feed, 10, models=100, seed=12 + i,
                          t0_ms=start_ms, per_ms=LIVE_PER_MS, first_id=first)
        feeds.append((staged, folder / "logs" / f"{name}.jsonl", nbytes))
    daemon = pinned_daemon(folder, many_models_config(folder / "logs" / "*.jsonl", folder / "state",
                                               checkpoint_interval="1s", poll_interval="1s"))
    with running(daemon):
        wait_count(daemon, sizes.scrape_lines, budget_s(sizes.scrape_lines))
        body = get(daemon.url + "/metrics")
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        kl_series = body.count(b"\nmodel_drift_kl_divergence{")
        times = []
        cpu0 = proc_cpu_s(daemon.pid)
        for _ in range(sizes.scrape_gets):
            t = time.perf_counter()
            get(daemon.url + "/metrics")
            times.append(time.perf_counter() - t)
        cpu_per_scrape = (proc_cpu_s(daemon.pid) - cpu0) / sizes.scrape_gets
        p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
        table.add("/metrics size, 100 models x 3 windows x 10 classes",
                  f"{len(body) / 1024:,.0f} KiB, {series:,} samples ({kl_series} KL series)")
        table.add(f"/metrics latency at rest, {sizes.scrape_gets} GETs (p50 / p99 / max)",
                  f"{ms(p50)} / {ms(p99)} / {ms(max(times))}", "< 50 ms", max(times) < 0.05)
        table.add("daemon CPU per scrape", ms(cpu_per_scrape))

        quiet = ingest(daemon, *feeds[0], timeout_s=budget_s(sizes.scrape_feed))
        expected = sizes.scrape_lines + sizes.scrape_feed
        wait_count(daemon, expected, 60)
        stop = threading.Event()
        busy: list[float] = []

        def hammer() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    get(daemon.url + "/metrics", 10)
                except OSError:
                    continue
                busy.append(time.perf_counter() - t)

        client = threading.Thread(target=hammer, daemon=True)
        client.start()
        try:
            loud = ingest(daemon, *feeds[1], timeout_s=budget_s(sizes.scrape_feed))
        finally:
            stop.set()
            client.join(timeout=15)
        wait_count(daemon, expected + sizes.scrape_feed, 60)
    n = sizes.scrape_feed
    table.add("ingest 100 models K=10, nobody scraping", rate(n, quiet.seconds))
    table.add(f"ingest while scraping in a tight loop ({len(busy)} scrapes)",
              f"{rate(n, loud.seconds)} ({quiet.seconds / loud.seconds:.0%} of quiet)")
    table.add("/metrics latency during ingestion (p50 / p99 / max)",
              f"{ms(percentile(busy, 0.5))} / {ms(percentile(busy, 0.99))} / {ms(max(busy))}"
              if busy else "no scrape finished", "< 50 ms", bool(busy) and max(busy) < 0.05)
    extra = loud.pause_s - quiet.pause_s
    table.add("longest gap between block reads, quiet / scraping (checkpoints aside)",
              f"{ms(quiet.pause_s)} / {ms(loud.pause_s)}")
    table.add("longest stall added by scraping (gap scraping - gap quiet)", ms(extra),
              "< 50 ms", extra < 0.05)
    table.add("longest pause around a checkpoint write, quiet / scraping",
              f"{ms(quiet.checkpoint_pause_s)} / {ms(loud.checkpoint_pause_s)}")
    shutil.rmtree(folder)
