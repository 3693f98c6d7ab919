"""Command line: run, demo, check-config, replay. The one place that turns errors into exit codes."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace

from monitor.aggregate import Aggregator, ModelSnapshot
from monitor.config import load_config
from monitor.errors import ConfigErrors, MonitorError

log = logging.getLogger("monitor")


def _run(args: argparse.Namespace) -> int:
    from monitor.daemon import Daemon

    config = load_config(args.config)
    if args.web_config_file is not None:
        config = replace(config, web_config_file=os.path.abspath(args.web_config_file))
    return Daemon(config, args.config).run()


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if config.web_config_file is not None:
        from monitor.http import load_web

        load_web(config.web_config_file)
    print(f"{args.config}: ok ({len(config.sources)} sources, {len(config.labels)} label sources, "
          f"{len(config.models)} models)")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from monitor.daemon import Reader

    config = load_config(args.config)
    aggregator = Aggregator(config)
    reader = Reader(config, aggregator, from_start=True)
    gc.freeze()  # start-up objects live for good: keep the cyclic GC off them
    progress = Progress(time.monotonic) if sys.stderr.isatty() else None
    done = 0
    # The clock is the newest event time read: no wall clock moves the windows.
    while read := reader.step(now=-math.inf, arrival=time.time()):
        done += read
        if progress is not None:
            lines = sum(sum(c.lines.values()) for c in aggregator.counters.values())
            progress.show(done, done + reader.backlog_bytes(), lines)
    reader.close()
    if progress is not None:
        sys.stderr.write("\n")
    snapshot = aggregator.snapshot(-math.inf)
    if args.json:
        from monitor.export import samples

        json.dump({"metrics": samples(snapshot.models)}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_table(snapshot.models))
    return 0


class Progress:
    """Bytes done of total, lines/s and ETA on one rewritten stderr line, at most 2/s."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self.monotonic = monotonic
        self.started = monotonic()
        self.last = -math.inf

    def show(self, done: int, total: int, lines: int) -> None:
        now = self.monotonic()
        if now - self.last < 0.5:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        eta = (total - done) / max(done / elapsed, 1.0)
        sys.stderr.write(f"\rreplay {done / 2**20:,.1f} of {total / 2**20:,.1f} MiB  "
                         f"{lines / elapsed:,.0f} lines/s  eta {eta:,.0f}s ")
        sys.stderr.flush()


def _demo(args: argparse.Namespace) -> int:
    from monitor.demo import run_demo

    return run_demo(port=args.port, duration_s=args.duration)


def _fmt(value: float, digits: int = 6) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "-"


def format_table(models: tuple[ModelSnapshot, ...]) -> str:
    """Per model and window: counts and divergences ('-' where below min_samples)."""
    head = ("model", "window", "preds", "labels", "kl", "cross_ent", "js", "pred_kl", "log_loss")
    rows = [head]
    for m in models:
        for i, window in enumerate(m.windows):
            rows.append((m.name, window, f"{m.window_predictions[i]:.0f}",
                         f"{m.window_labels[i]:.0f}", _fmt(m.kl_divergence[i]),
                         _fmt(m.cross_entropy[i]), _fmt(m.js_divergence[i]),
                         _fmt(m.prediction_kl_divergence[i]), _fmt(m.log_loss[i])))
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    refs = [f"{m.name}: reference entropy {_fmt(m.reference_entropy)} nats over "
            f"{m.reference_labels:.0f} labels" for m in models]
    return "\n".join([*lines, "", *refs]) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drift-monitor",
        description="Tail prediction logs and export label/prediction drift as Prometheus metrics.")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--config", required=True)
    run.add_argument("--web.config.file", dest="web_config_file", default=None,
                     help="exporter-toolkit web config (TLS, basic auth); overrides "
                          "web_config_file in the config")
    run.set_defaults(func=_run)
    demo = sub.add_parser("demo", help="synthetic stream with injected drift, daemon and live table")
    demo.add_argument("--port", type=int, default=9841,
                      help="metrics port (a free one is picked when it is taken)")
    demo.add_argument("--duration", type=float, default=None,
                      help="stop after this many seconds (default: until Ctrl-C)")
    demo.set_defaults(func=_demo)
    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("config")
    check.set_defaults(func=_check_config)
    replay = sub.add_parser("replay", help="read every source once and print the final values")
    replay.add_argument("--config", required=True)
    replay.add_argument("--json", action="store_true", help="print JSON with the metric names")
    replay.set_defaults(func=_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ConfigErrors as exc:
        for error in exc.errors:
            print(f"drift-monitor: {error}", file=sys.stderr)
        return exc.exit_code
    except MonitorError as exc:
        print(f"drift-monitor: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception:
        log.exception("unexpected failure")
        return 1


if __name__ == "__main__":
    sys.exit(main())
