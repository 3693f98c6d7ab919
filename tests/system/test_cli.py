"""The command line as a user types it: --config in both forms, --log-level anywhere and
in any case, --version, help for every option, run's exit codes and signals in its help,
and --web.listen-address."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from monitor.shell.cli import build_parser
from monitor.shell.export import VERSION
from tests.system.conftest import append, free_port, model_config, parse_metrics, run_cli, source, value
from tests.waiting import wait_until


def write_config(folder: Path, **overrides: object) -> Path:
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    config = {"sources": [source(logs / "p-*.jsonl")], "models": {"fraud": model_config()},
              **overrides}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_version_prints_the_package_version():
    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"drift-monitor {VERSION}"


@pytest.mark.parametrize("command", ["check-config", "replay"])
@pytest.mark.parametrize("form", ["positional", "flag"])
def test_config_file_is_accepted_as_flag_or_positional(tmp_path, command, form):
    config = write_config(tmp_path)
    append(tmp_path / "logs" / "p-1.jsonl", [{"probs": [0.2, 0.8], "label": 1}])
    args = [str(config)] if form == "positional" else ["--config", str(config)]
    out = run_cli(command, *args)
    assert out.returncode == 0, out.stderr
    expected = {"check-config": f"{config}: ok (", "replay": "fraud  1h"}[command]
    assert expected in out.stdout, out.stdout


@pytest.mark.parametrize("form", ["positional", "flag"])
def test_run_reads_the_config_given_in_either_form(tmp_path, form):
    # A state_dir that is a file makes run stop at once, naming it: proof it read the file.
    (tmp_path / "a-file").write_text("")
    config = write_config(tmp_path, state_dir=str(tmp_path / "a-file"))
    args = [str(config)] if form == "positional" else ["--config", str(config)]
    out = run_cli("run", *args)
    assert out.returncode == 1, out.stderr
    assert f"state_dir {tmp_path / 'a-file'}: not a directory" in out.stderr


@pytest.mark.parametrize("command", ["run", "check-config", "replay"])
def test_no_config_or_two_different_ones_is_a_usage_error(tmp_path, command):
    config = write_config(tmp_path)
    out = run_cli(command)
    assert out.returncode == 2 and "give the config file" in out.stderr
    out = run_cli(command, str(config), "--config", str(tmp_path / "other.yaml"))
    assert out.returncode == 2 and "two config files" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_log_level_is_accepted_before_or_after_the_subcommand_in_any_case(tmp_path, where):
    config = write_config(tmp_path)  # its glob matches no file: replay warns about it

    def replay(level: str) -> subprocess.CompletedProcess:
        flag = ["--log-level", level]
        args = [*flag, "replay", str(config)] if where == "before" else ["replay", str(config), *flag]
        out = run_cli(*args)
        assert out.returncode == 0, out.stderr
        return out

    assert "no file matches source=preds" in replay("warning").stderr
    assert "no file matches" not in replay("Error").stderr
    assert "no file matches" not in replay("ERROR").stderr


def test_an_unknown_log_level_is_a_usage_error(tmp_path):
    out = run_cli("check-config", str(write_config(tmp_path)), "--log-level", "loud")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_option_and_subcommand_has_help_text():
    parser = build_parser()
    for name, sub in {"": parser, **subcommands(parser)}.items():
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert all(choice.help for choice in action._choices_actions)
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)


def test_run_help_states_exit_codes_and_signals():
    out = run_cli("run", "--help")
    assert out.returncode == 0
    for word in ("SIGTERM", "SIGINT", "SIGHUP", "exit codes", "0 ", "1 ", "2 "):
        assert word in out.stdout, word


def test_web_listen_address_overrides_listen_and_survives_a_reload(tmp_path):
    configured, flagged = free_port(), free_port()
    config = write_config(tmp_path, listen=f"127.0.0.1:{configured}",
                          state_dir=str(tmp_path / "state"), poll_interval="200ms",
                          checkpoint_interval="200ms")
    append(tmp_path / "logs" / "p-1.jsonl", [{"probs": [0.2, 0.8], "label": 1}] * 3)
    stderr = tmp_path / "stderr"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(config),
                                 "--web.listen-address", f"127.0.0.1:{flagged}"],
                                stdout=subprocess.DEVNULL, stderr=err)

    def predictions(port: int) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                return value(parse_metrics(r.read().decode()), "model_drift_predictions_total",
                             model="fraud")
        except OSError:
            return None

    try:
        assert wait_until(lambda: predictions(flagged) == 3, 20)
        assert predictions(configured) is None
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "config reloaded" in stderr.read_text(), 20)
        assert predictions(flagged) == 3
        assert "need a restart" not in stderr.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_a_bad_web_listen_address_exits_2_naming_the_flag(tmp_path):
    config = write_config(tmp_path, state_dir=str(tmp_path / "state"))
    out = run_cli("run", str(config), "--web.listen-address", "9841")
    assert out.returncode == 2
    assert "--web.listen-address: expected HOST:PORT" in out.stderr
