"""No single input stops the daemon: hostile lines are counted rejections, hostile
configs are exit 2 (check-config, run, replay) or a kept old config (SIGHUP); a line
stamped hours ahead never moves the window clock, not even across kill -9; labels
without a model join by id alone across kill -9. Real daemon subprocesses, real files."""

from __future__ import annotations

import re
import signal
import time

import pytest
import yaml

from tests.system.conftest import append, model_config, run_cli, source, value, wait_until

HUGE = "1" + "0" * 400  # past float range: int -> float raises OverflowError
HUGE_LINES = [
    f'{{"probs": [0.5, 0.5], "label": {HUGE}}}',
    f'{{"probs": [0.5, {HUGE}]}}',
    f'{{"probs": {{"legit": {HUGE}}}}}',
    f'{{"probs": [0.5, 0.5], "ts": {HUGE}}}',
    f'{{"probs": [0.5, 0.5], "id": {HUGE}}}',
    f'{{"probs": [0.5, 0.5], "id": "{"r" * 300}"}}',
]


def test_lines_with_huge_integers_or_long_ids_are_rejected_and_never_stop_the_daemon(daemon_factory, logs):
    good = [{"ts": time.time(), "probs": [0.25, 0.75], "label": 1}] * 3
    append(logs / "p.jsonl", [good[0], *HUGE_LINES, *good[1:]])
    d = daemon_factory({"sources": [source(logs / "p.jsonl")], "models": {"fraud": model_config()}})
    d.start()
    d.wait_value("drift_monitor_lines_total", len(HUGE_LINES), source="preds", status="rejected")
    d.kill()  # the restart re-reads nothing it has checkpointed, and dies on nothing it reads
    append(logs / "p.jsonl", [*HUGE_LINES, good[0]])
    d.start()
    d.wait_value("model_drift_predictions_total", 4, model="fraud")
    samples = d.scrape()
    rejected = {reason: value(samples, "drift_monitor_rejected_lines_total", source="preds",
                              reason=reason)
                for reason in ("unknown_class", "bad_probability", "bad_timestamp", "bad_id",
                               "id_too_long")}
    assert rejected == {"unknown_class": 2, "bad_probability": 4, "bad_timestamp": 2, "bad_id": 2,
                        "id_too_long": 2}
    assert "Traceback" not in d.log()
    assert d.stop() == 0


MINIMAL = "sources: [{name: s, path: /tmp/none.jsonl}]\nmodels: {m: {classes: [a, b]}}\n"
LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
HOSTILE_CONFIGS = [
    ("huge sum_tolerance", MINIMAL + f"sum_tolerance: {HUGE}\n", "sum_tolerance:"),
    ("huge duration", MINIMAL + f"checkpoint_interval: {HUGE}\n", "checkpoint_interval:"),
    ("nested 1,000 deep", MINIMAL + "x: " + "[" * 1000 + "]" * 1000 + "\n", "nested deeper than 64"),
    ("alias bomb", MINIMAL + LAUGHS, "once aliases are expanded"),
    ("python tag", MINIMAL + "x: !!python/object/apply:os.system [touch /tmp/pwned]\n",
     "could not determine a constructor"),
    ("NUL in a path", MINIMAL.replace("/tmp/none.jsonl", '"/tmp/\\0.jsonl"'), "sources[0].path:"),
    ("nanosecond poll", MINIMAL + "poll_interval: 0.000000001\n", "poll_interval:"),
    ("bad time zone", MINIMAL.replace("path: /tmp", "timezone: Mars/Base, path: /tmp"),
     "sources[0].timezone:"),
    ("larger than 1 MiB", MINIMAL + "# " + "x" * (1 << 20) + "\n", "larger than 1 MiB"),
]


@pytest.mark.parametrize(("text", "message"), [(t, m) for _, t, m in HOSTILE_CONFIGS],
                         ids=[n for n, _, _ in HOSTILE_CONFIGS])
def test_hostile_configs_exit_2_with_a_message_naming_where(tmp_path, text, message):
    file = tmp_path / "config.yaml"
    file.write_text(text)
    for args in (("check-config", str(file)), ("run", "--config", str(file)),
                 ("replay", "--config", str(file))):
        out = run_cli(*args)
        assert out.returncode == 2, (args, out.stderr[-2000:])
        assert message in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert len(out.stderr) < 5000


def test_sighup_with_a_hostile_config_keeps_the_running_config(daemon_factory, logs):
    d = daemon_factory({"sources": [source(logs / "p.jsonl")], "models": {"fraud": model_config()}})
    good = d.config_path.read_text()
    d.start()
    for i, (name, text, _) in enumerate(HOSTILE_CONFIGS):
        d.config_path.write_text(text)
        d.send(signal.SIGHUP)
        wait_until(lambda i=i: d.log().count("reload rejected") > i, 30, what=f"{name} rejected")
        append(logs / "p.jsonl", [{"probs": [0.5, 0.5]}])
        d.wait_value("model_drift_predictions_total", i + 1, timeout_s=20, model="fraud")
    d.config_path.write_text(good)
    assert "Traceback" not in d.log()
    assert d.stop() == 0


def test_a_line_stamped_two_hours_ahead_never_moves_the_window_clock_even_across_kill_9(
        daemon_factory, logs):
    config = {"sources": [source(logs / "p.jsonl")],
              "models": {"fraud": model_config(windows=["5m", "1h"])}}
    d = daemon_factory(config)
    now = time.time()
    # A producer writing local time without an offset, read as UTC: two hours ahead.
    ahead = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now + 7200))
    append(logs / "p.jsonl", [{"ts": now, "probs": [0.5, 0.5]}, {"ts": ahead, "probs": [0.5, 0.5]},
                              {"ts": now + 1, "probs": [0.5, 0.5]}])
    d.start()
    d.wait_value("drift_monitor_rejected_lines_total", 1, source="preds", reason="bad_timestamp")
    d.wait_value("model_drift_predictions_total", 2, model="fraud")
    time.sleep(0.5)  # a checkpoint or two with whatever clock the windows have
    d.kill()
    d.start()
    append(logs / "p.jsonl", [{"ts": time.time(), "probs": [0.5, 0.5]} for _ in range(5)])
    d.wait_value("model_drift_predictions_total", 7, model="fraud")
    samples = d.scrape()
    assert value(samples, "drift_monitor_lines_total", source="preds", status="late") == 0
    assert value(samples, "drift_monitor_lines_total", source="preds", status="ok") == 7
    assert value(samples, "model_drift_window_predictions", model="fraud", window="5m") == 7
    assert value(samples, "model_drift_last_event_timestamp_seconds", model="fraud") < now + 3600
    assert re.search(r"reason=bad_timestamp .*\((71\d\d|72\d\d)s ahead of the clock\)", d.log())
    assert d.stop() == 0


def test_labels_without_a_model_join_by_id_alone_across_kill_9_with_two_models(daemon_factory, logs):
    now = time.time()
    n = 120
    models = {"fraud": ["legit", "fraud"], "churn": ["stay", "leave", "unknown"]}
    predictions = []
    labels = []
    for i in range(n):
        model = "fraud" if i % 2 else "churn"
        classes = models[model]
        probs = [1.0 / len(classes)] * len(classes)
        predictions.append({"ts": now - 200 + i, "model": model, "id": f"r-{i}", "probs": probs})
        if i % 5:  # every fifth id gets no label
            label = i % len(classes)
            labels.append({"id": f"r-{i}", "label": classes[label] if i % 3 else label})
    labels.append({"id": "never-predicted", "label": "leave"})
    config = {
        "sources": [{"name": "preds", "path": str(logs / "pred.jsonl")}],
        "labels": [{"name": "feedback", "path": str(logs / "labels.jsonl"), "join_ttl": "1h"}],
        "models": {name: model_config(classes=classes) for name, classes in models.items()},
    }
    d = daemon_factory(config)
    # Half the labels come before their predictions; a kill -9 with both sides waiting.
    append(logs / "labels.jsonl", labels[: len(labels) // 2])
    append(logs / "pred.jsonl", predictions[: n // 4])
    d.start()
    d.wait_value("model_drift_predictions_total", n // 8, model="fraud")
    d.wait_value("drift_monitor_lines_total", len(labels) // 2, source="feedback", status="ok")
    time.sleep(0.5)
    d.kill()
    append(logs / "pred.jsonl", predictions[n // 4:])
    append(logs / "labels.jsonl", labels[len(labels) // 2:])
    d.start()
    d.wait_value("model_drift_predictions_total", n // 2, model="churn")
    d.wait_value("drift_monitor_lines_total", len(labels), source="feedback", status="ok")
    samples = d.scrape()
    assert value(samples, "drift_monitor_rejected_lines_total", source="feedback",
                 reason="missing_field") == 0
    for model, classes in models.items():
        mine = [i for i in range(n) if (model == "fraud") == bool(i % 2) and i % 5]
        assert value(samples, "drift_monitor_label_joins_total", model=model) == len(mine)
        assert value(samples, "drift_monitor_pending_labels", model=model) == n // 2 - len(mine)
        for k, cls in enumerate(classes):
            assert value(samples, "model_drift_labels_total", model=model, **{"class": cls}) == sum(
                1 for i in mine if i % len(classes) == k), (model, cls)
        assert value(samples, "drift_monitor_label_expired_total", model=model) == 0
    assert d.stop() == 0


def test_shipped_example_config_documents_the_new_keys():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "config" / "example.yaml").read_text()
    doc = yaml.safe_load(text)
    assert {"max_id_bytes", "max_clock_skew"} <= set(doc)
    assert "timezone" in doc["sources"][0]
