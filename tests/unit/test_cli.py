"""cli.main in-process: arguments, and which errors become which exit codes (none starts
the daemon: each fails before it would)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from monitor.shell.cli import main


def write_config(folder: Path, **top: object) -> Path:
    (folder / "logs").mkdir(exist_ok=True)
    (folder / "logs" / "p.jsonl").write_text("")
    config = {"sources": [{"name": "preds", "path": str(folder / "logs" / "p.jsonl"),
                           "model": "fraud"}],
              "models": {"fraud": {"classes": ["legit", "fraud"]}}, **top}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_check_config_of_a_good_config_exits_0_and_says_what_it_found(tmp_path, capsys):
    config = write_config(tmp_path)
    assert main(["check-config", str(config)]) == 0
    assert capsys.readouterr().out == f"{config}: ok (1 sources, 0 label sources, 1 models)\n"


def test_check_config_prints_every_problem_by_key_path_and_exits_2(tmp_path, capsys):
    config = write_config(tmp_path, models={"fraud": {"classes": ["a", "b"], "windows": ["nonsense"]},
                                                 "tiny": {"classes": ["a"]}},
                          poll_interval="soon")
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "drift-monitor: models.fraud.windows[0]:" in err
    assert "drift-monitor: models.tiny.classes:" in err
    assert "drift-monitor: poll_interval:" in err


def test_check_config_names_a_state_dir_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    config = write_config(tmp_path, state_dir=str(blocker))
    assert main(["check-config", str(config)]) == 2
    assert f"drift-monitor: state_dir: {blocker}: not a directory" in capsys.readouterr().err


def test_run_without_state_dir_exits_2_naming_the_key(tmp_path, capsys):
    assert main(["run", str(write_config(tmp_path))]) == 2
    assert "drift-monitor: state_dir: required for `run`" in capsys.readouterr().err


def test_a_bad_listen_address_flag_exits_2_naming_the_flag(tmp_path, capsys):
    config = write_config(tmp_path, state_dir=str(tmp_path / "state"))
    assert main(["run", str(config), "--web.listen-address", "9841"]) == 2
    assert "drift-monitor: --web.listen-address: expected HOST:PORT" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()  # refused before any state is touched


def test_replay_openmetrics_without_step_exits_2_naming_the_flag(tmp_path, capsys):
    assert main(["replay", str(write_config(tmp_path)), "--openmetrics"]) == 2
    assert "drift-monitor: --openmetrics: needs --step" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["check-config"],  # no config at all
    ["check-config", "a.yaml", "--config", "b.yaml"],  # two different ones
    ["run", "c.yaml", "--log-level", "chatty"],
    ["replay", "c.yaml", "--step", "soon"],
])
def test_usage_errors_exit_2_through_argparse(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "usage:" in capsys.readouterr().err
