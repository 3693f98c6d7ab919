"""Command line: run, demo, check-config, replay. The one place that turns errors into exit codes."""

from __future__ import annotations

import argparse
import gc
import logging
import sys

from monitor.config import load_config, parse_duration
from monitor.errors import ConfigError, ConfigErrors, MonitorError

log = logging.getLogger("monitor")


def _run(args: argparse.Namespace) -> int:
    from monitor.daemon import Daemon

    return Daemon(load_config(args.config), args.config).run()


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(f"{args.config}: ok ({len(config.sources)} sources, {len(config.labels)} label sources, "
          f"{len(config.models)} models)")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from monitor.replay import run_replay

    if args.openmetrics and args.step is None:
        raise ConfigError("--openmetrics", "needs --step")
    gc.freeze()  # start-up objects live for good: keep the cyclic GC off them
    return run_replay(load_config(args.config), json_out=args.json, openmetrics=args.openmetrics,
                      step_s=args.step, instance=args.instance)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _demo(args: argparse.Namespace) -> int:
    from monitor.demo import run_demo

    return run_demo(port=args.port, duration_s=args.duration)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drift-monitor",
        description="Tail prediction logs and export label/prediction drift as Prometheus metrics.")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--config", required=True)
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
    output = replay.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON with the metric names "
                        "(with --step: JSON Lines, one object per step)")
    replay.add_argument("--step", metavar="DURATION", type=_duration,
                        help="print the values at every multiple of DURATION (e.g. 1m) of event "
                        "time instead of only at the end")
    output.add_argument("--openmetrics", action="store_true",
                        help="with --step: one OpenMetrics text with timestamps, for "
                        "`promtool tsdb create-blocks-from openmetrics`")
    replay.add_argument("--instance", default="replay",
                        help='the instance label of the --openmetrics series (default "replay")')
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
