"""Command line: run, demo, check-config, replay. The one place that turns errors into exit codes."""

from __future__ import annotations

import argparse
import gc
import glob as globlib
import logging
import os
import sys
import tempfile
from dataclasses import replace

from monitor.core.errors import ConfigError, ConfigErrors, MonitorError
from monitor.core.settings import LabelSourceConfig, SourceConfig
from monitor.shell.config import load_config, parse_duration, parse_listen
from monitor.shell.export import VERSION

log = logging.getLogger("monitor")


def _run(args: argparse.Namespace) -> int:
    from monitor.shell.daemon import Daemon

    listen = None if args.listen is None else _listen_address(args.listen)
    config = load_config(args.config)
    if args.web_config_file is not None:
        config = replace(config, web_config_file=os.path.abspath(args.web_config_file))
    return Daemon(config, args.config, listen=listen).run()


def _listen_address(text: str) -> tuple[str, int]:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise ConfigErrors([ConfigError("--web.listen-address", str(exc))]) from None


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if config.web_config_file is not None:
        from monitor.shell.http import load_web

        load_web(config.web_config_file)
    if config.state_dir is not None and (problem := _state_dir_problem(config.state_dir)):
        raise ConfigErrors([ConfigError("state_dir", f"{config.state_dir}: {problem}")])
    # A glob that matches nothing yet is legal (the service may not have written its
    # first log), so it is a warning, not an error; but it is the likeliest mistake.
    groups: dict[str, tuple[SourceConfig | LabelSourceConfig, ...]] = {
        "sources": config.sources, "labels": config.labels}
    unmatched = [(f"{key}[{i}].path", source)
                 for key, group in groups.items()
                 for i, source in enumerate(group)
                 if not any(os.path.isfile(p) for p in globlib.glob(source.path))]
    for key, source in unmatched:
        print(f"drift-monitor: warning: {key}: no file matches {source.path} (source {source.name})",
              file=sys.stderr)
    print(f"{args.config}: ok ({len(config.sources)} sources, {len(config.labels)} label sources, "
          f"{len(config.models)} models{f', {len(unmatched)} matching no file' if unmatched else ''})")
    return 0


def _state_dir_problem(path: str) -> str | None:
    """Why `run` could not make `path` or write in it, or None. Nothing is left behind."""
    if os.path.lexists(path):
        if not os.path.isdir(path):
            return "not a directory"
        try:
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as exc:
            return f"not writable: {exc.strerror}"
        return None
    parent = os.path.dirname(path)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"cannot be created: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} is not writable"
    return None


def _replay(args: argparse.Namespace) -> int:
    from monitor.shell.replay import run_replay

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


SAMPLE_LINES = 1000  # lines `init` reads, from the matched files in name order
SAMPLE_BYTES = 1 << 20  # at most this much of each file


def _init(args: argparse.Namespace) -> int:
    from monitor.shell.starter import infer

    files = sorted(p for p in globlib.glob(args.glob) if os.path.isfile(p))
    if not files:
        raise ConfigErrors([ConfigError("--glob", f"no file matches {args.glob}")])
    if args.output is not None and os.path.lexists(args.output):
        raise ConfigErrors([ConfigError("--output", f"{args.output} exists: remove it or "
                                                    "choose another name")])
    lines: list[bytes] = []
    used = 0
    for path in files:
        if len(lines) >= SAMPLE_LINES:
            break
        try:
            with open(path, "rb") as fh:
                data = fh.read(SAMPLE_BYTES)
        except OSError as exc:
            log.warning("cannot read file=%s error=%s", path, exc.strerror)
            continue
        used += 1
        complete = data[: data.rfind(b"\n") + 1].splitlines()
        lines += [line for line in complete if line.strip()][: SAMPLE_LINES - len(lines)]
    try:
        starter = infer(lines, os.path.abspath(args.glob), used)
    except ValueError as exc:
        raise ConfigErrors([ConfigError("--glob", f"{args.glob}: {exc}")]) from None
    if args.output is None:
        sys.stdout.write(starter.text)
        return 0
    with open(args.output, "x", encoding="utf-8") as fh:
        fh.write(starter.text)
    for note in starter.notes:
        print(f"drift-monitor: check: {note}", file=sys.stderr)
    print(f"wrote {args.output} from {len(lines)} lines of {used} file(s); "
          f"next: drift-monitor check-config {args.output}", file=sys.stderr)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from monitor.shell.demo import run_demo

    return run_demo(port=args.port, duration_s=args.duration)


RUN_EPILOG = """\
signals:
  SIGTERM, SIGINT  final checkpoint, then exit 0 (within 5 s)
  SIGHUP           reload the config (a bad one is logged, the old one keeps running)

exit codes:
  0  stopped by SIGTERM or SIGINT
  1  runtime failure (state_dir not usable, listen address taken)
  2  bad usage or config (every problem printed with its key path)
"""
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config FILE`, or the file as the one positional argument: both forms work
    for every subcommand that reads a config."""
    parser.add_argument("config_file", nargs="?", metavar="FILE", help="the config file")
    parser.add_argument("--config", metavar="FILE", help="the config file (same as FILE)")


def build_parser() -> argparse.ArgumentParser:
    # --log-level is accepted before and after the subcommand: the subcommands' copy
    # defaults to SUPPRESS, so it overrides the top-level one only when it is given.
    level = argparse.ArgumentParser(add_help=False)
    level.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default=argparse.SUPPRESS,
                       help="log verbosity, any case (default INFO)")
    parser = argparse.ArgumentParser(
        prog="drift-monitor",
        description="Tail prediction logs and export label/prediction drift as Prometheus metrics.")
    parser.add_argument("--version", action="version", version=f"drift-monitor {VERSION}",
                        help="print the version and exit")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO",
                        help="log verbosity, any case (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", parents=[level], help="run the daemon in the foreground",
                         description="Run the daemon in the foreground; it logs to stderr.",
                         epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _config_arguments(run)
    run.add_argument("--web.listen-address", dest="listen", metavar="HOST:PORT",
                     help="serve /metrics here instead of the config's `listen` "
                          "(the container image passes 0.0.0.0:9841)")
    run.add_argument("--web.config.file", dest="web_config_file", default=None,
                     help="exporter-toolkit web config (TLS, basic auth); overrides "
                          "web_config_file in the config")
    run.set_defaults(func=_run)
    init = sub.add_parser("init", parents=[level],
                          help="write a starter config from a sample of your prediction logs",
                          description="Read the first lines of the files matching GLOB and "
                                      "write a config with the fields, models and classes found.")
    init.add_argument("--glob", required=True, metavar="GLOB",
                      help="the prediction logs, e.g. 'logs/*.jsonl' (quote it from the shell)")
    init.add_argument("--output", metavar="FILE",
                      help="write the config here (never over an existing file); default stdout")
    init.set_defaults(func=_init)
    demo = sub.add_parser("demo", parents=[level],
                          help="synthetic stream with injected drift, daemon and live table")
    demo.add_argument("--port", type=int, default=9841,
                      help="metrics port (default 9841; a free one is picked when it is taken)")
    demo.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                      help="stop after this many seconds (default: until Ctrl-C)")
    demo.set_defaults(func=_demo)
    check = sub.add_parser("check-config", parents=[level],
                           help="validate a config file (exit 0, or 2 with every problem)")
    _config_arguments(check)
    check.set_defaults(func=_check_config)
    replay = sub.add_parser("replay", parents=[level],
                            help="read every source once and print the final values")
    _config_arguments(replay)
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


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "config_file"):
        if args.config_file and args.config and args.config_file != args.config:
            parser.error(f"{args.command}: two config files given ({args.config_file}, {args.config})")
        args.config = args.config or args.config_file
        if not args.config:
            parser.error(f"{args.command}: give the config file, as FILE or --config FILE")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
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
