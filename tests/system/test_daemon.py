"""The daemon end to end: real subprocess, real files, real scrapes."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from tests.system.conftest import append, model_config, run_cli, source, value, wait_until


def independent(a: np.ndarray, probs: np.ndarray, eps: float = 1e-12) -> dict[str, float]:
    """Plain numpy, written from DESIGN.md, sharing no code with the daemon: reference
    A against the mean of a window's probability vectors."""
    b = np.maximum(probs.mean(axis=0), eps)
    b = b / b.sum()
    nz = a > 0
    kl = float(np.sum(a[nz] * np.log(a[nz] / b[nz])))
    s = float(-np.sum(a[nz] * np.log(a[nz])))
    m = (a + b) / 2
    js = 0.5 * float(np.sum(a[nz] * np.log(a[nz] / m[nz]))) + 0.5 * float(np.sum(b * np.log(b / m)))
    return {"kl": kl, "ce": kl + s, "s": s, "js": js}


def log_loss(labels: list[int], probs: np.ndarray, eps: float = 1e-12) -> float:
    return float(np.mean(-np.log(np.maximum(probs[np.arange(len(labels)), labels], eps))))


@pytest.mark.parametrize("watch", ["auto", "poll"])
def test_line_appended_to_watched_file_shows_by_the_next_poll_and_checkpoint(daemon_factory, logs,
                                                                             watch):
    interval_s = 1.0
    d = daemon_factory({"sources": [source(logs / "p-*.jsonl")], "watch": watch,
                        "poll_interval": f"{interval_s}s", "checkpoint_interval": f"{interval_s}s",
                        "models": {"fraud": model_config()}}).start()
    assert d.value("model_drift_predictions_total", model="fraud") == 0
    append(logs / "p-1.jsonl", [{"ts": time.time(), "probs": [0.2, 0.8], "label": 1}])
    # At worst read at the next poll, then published at the next checkpoint after it;
    # the margin is for a loaded machine, far below another interval of each.
    d.wait_value("model_drift_predictions_total", 1, timeout_s=2 * interval_s + 1.5, model="fraud")
    assert d.stop() == 0


def test_new_file_matching_the_glob_is_picked_up(daemon_factory, logs):
    d = daemon_factory({"sources": [source(logs / "p-*.jsonl")],
                        "models": {"fraud": model_config()}}).start()
    append(logs / "p-1.jsonl", [{"probs": [0.5, 0.5]}])
    append(logs / "p-2.jsonl", [{"probs": [0.5, 0.5]}] * 2)
    append(logs / "other.log", [{"probs": [0.5, 0.5]}] * 5)
    d.wait_value("model_drift_predictions_total", 3, model="fraud")
    assert d.stop() == 0


def test_metrics_equal_an_independent_numpy_computation(daemon_factory, logs):
    rng = np.random.default_rng(3)
    n, now = 500, time.time()
    probs = rng.dirichlet([2.0, 1.0, 0.5], size=n)
    labels = rng.choice(3, size=n, p=[0.5, 0.3, 0.2]).tolist()
    lines = [{"ts": now - 10 + i * 0.01, "probs": p.tolist(), "label": c}
             for i, (p, c) in enumerate(zip(probs, labels))]
    append(logs / "p-1.jsonl", lines)
    config = {"sources": [source(logs / "p-*.jsonl", model="m3")],
              "models": {"m3": {"classes": ["a", "b", "c"], "windows": ["1h", {"count": 200}],
                                "min_samples": 1}}}
    d = daemon_factory(config).start()
    d.wait_value("model_drift_predictions_total", n, model="m3")
    samples = d.scrape()
    # The reference A is all labels; B and log loss are per window.
    ref = np.bincount(labels, minlength=3) / n
    for window, last in (("1h", n), ("count:200", 200)):
        exp = {**independent(ref, probs[-last:]), "logloss": log_loss(labels[-last:], probs[-last:])}
        got = {
            "kl": value(samples, "model_drift_kl_divergence", model="m3", window=window),
            "ce": value(samples, "model_drift_cross_entropy", model="m3", window=window),
            "js": value(samples, "model_drift_js_divergence", model="m3", window=window),
            "logloss": value(samples, "model_drift_log_loss", model="m3", window=window),
        }
        for key in got:
            assert got[key] == pytest.approx(exp[key], abs=1e-9), (window, key)
    assert value(samples, "model_drift_reference_entropy", model="m3") == pytest.approx(
        independent(ref, probs)["s"], abs=1e-9)
    assert value(samples, "model_drift_window_predictions", model="m3", window="count:200") == 200
    assert value(samples, "model_drift_labels_total", model="m3", **{"class": "c"}) == labels.count(2)
    assert value(samples, "model_drift_probability_total", model="m3", **{"class": "a"}) == (
        pytest.approx(probs[:, 0].sum(), abs=1e-9))
    assert d.stop() == 0


def test_replay_json_prints_the_same_values_as_metrics(daemon_factory, logs):
    rng = np.random.default_rng(5)
    now = time.time()
    lines = [{"ts": now - 60 + i * 0.1, "probs": p.tolist(), "label": int(rng.integers(2))}
             for i, p in enumerate(rng.dirichlet([1, 3], size=300))]
    append(logs / "p-1.jsonl", lines)
    d = daemon_factory({"sources": [source(logs / "p-*.jsonl")],
                        "models": {"fraud": model_config()}}).start()
    d.wait_value("model_drift_predictions_total", 300, model="fraud")
    scraped = d.scrape()
    assert d.stop() == 0
    out = run_cli("replay", "--config", str(d.config_path), "--json")
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout)["metrics"]
    names = {m["name"] for m in metrics}
    assert {"model_drift_kl_divergence", "model_drift_cross_entropy", "model_drift_log_loss",
            "model_drift_labels_total", "model_drift_predictions_total"} <= names
    for m in metrics:
        if m["name"] == "model_drift_last_event_timestamp_seconds":
            continue
        got = scraped[(m["name"], frozenset(m["labels"].items()))]
        assert m["value"] == pytest.approx(got, abs=1e-9), m
    table = run_cli("replay", "--config", str(d.config_path))
    assert table.returncode == 0 and "count:1000" in table.stdout and "kl" in table.stdout


GARBAGE = {
    "not_json": [b"{not json", b"[1, 2"],
    "not_utf8": [b'{"probs": [0.5, 0.5], "x": "\xff\xfe"}'],
    "not_object": [b"[0.5, 0.5]", b'"text"'],
    "missing_field": [b'{"label": 1}'],
    "bad_timestamp": [b'{"ts": "yesterday", "probs": [0.5, 0.5]}', b'{"ts": true, "probs": [0.5, 0.5]}'],
    "wrong_length": [b'{"probs": [0.2, 0.3, 0.5]}'],
    "bad_probability": [b'{"probs": [-0.5, 1.5]}', b'{"probs": [NaN, 1.0]}',
                        b'{"probs": [Infinity, 0]}', b'{"probs": ["a", "b"]}'],
    "bad_sum": [b'{"probs": [0.5, 0.6]}'],
    "unknown_class": [b'{"probs": [0.5, 0.5], "label": 7}', b'{"probs": {"cat": 1.0}}',
                      b'{"prediction": "dog"}'],
    "unknown_model": [b'{"model": "nope", "probs": [0.5, 0.5]}'],
    "too_long": [b'{"probs": [0.5, 0.5], "pad": "' + b"x" * 5000 + b'"}'],
}


def test_garbage_lines_of_every_kind_are_counted_and_change_nothing(daemon_factory, logs):
    good = [{"ts": time.time(), "probs": [0.3, 0.7], "label": 1}] * 3
    mixed: list = [good[0]]
    for lines in GARBAGE.values():
        mixed.extend(lines)
    mixed.extend(good[1:])
    append(logs / "p-1.jsonl", mixed)
    append(logs / "clean-1.jsonl", good)
    config = {"max_line_bytes": 1000,
              "sources": [source(logs / "p-*.jsonl"), source(logs / "clean-*.jsonl", name="clean")],
              "models": {"fraud": model_config()}}
    d = daemon_factory(config).start()
    d.wait_value("model_drift_predictions_total", 6, model="fraud")
    samples = d.scrape()
    for reason, lines in GARBAGE.items():
        assert value(samples, "drift_monitor_rejected_lines_total", source="preds",
                     reason=reason) == len(lines), reason
    total_bad = sum(len(v) for v in GARBAGE.values())
    assert value(samples, "drift_monitor_lines_total", source="preds", status="rejected") == total_bad
    assert value(samples, "drift_monitor_lines_total", source="preds", status="ok") == 3
    # The garbage changed nothing: both sources saw the same 3 good lines.
    for name in ("model_drift_kl_divergence", "model_drift_log_loss"):
        assert value(samples, name, model="fraud", window="1h") is not None
    assert value(samples, "model_drift_labels_total", model="fraud", **{"class": "fraud"}) == 6
    assert value(samples, "model_drift_labels_total", model="fraud", **{"class": "legit"}) == 0
    assert value(samples, "model_drift_probability_total", model="fraud",
                 **{"class": "fraud"}) == pytest.approx(4.2)
    log = d.log()
    assert "reason=too_long" in log and "line=" in log and "Traceback" not in log
    assert d.stop() == 0


@pytest.mark.parametrize("config, path", [
    ({"sources": [{"name": "x", "path": "a"}], "models": {"m": {"classes": ["a", "b"],
                                                               "windows": ["5m", "soon"]}}},
     "models.m.windows[1]"),
    ({"sources": [{"name": "x"}], "models": {"m": {"classes": ["a", "b"]}}}, "sources[0].path"),
    ({"sources": [{"name": "x", "path": "a"}], "models": {"m": {"classes": ["a", "b"]}},
      "checkpoint_interval": "-1s"}, "checkpoint_interval"),
    ({"sources": [{"name": "x", "path": "a"}], "models": {"m": {"classes": ["a", "b"],
     "reference": {"static": [0.5]}}}}, "models.m.reference.static"),
    ({"sources": [{"name": "x", "path": "a"}], "models": {"m": {"classes": ["a", "b"]}},
      "colour": "blue"}, "colour"),
])
def test_bad_config_exits_2_naming_the_key_path_without_traceback(tmp_path, config, path):
    import yaml

    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(config))
    for args in (("check-config", str(file)), ("run", "--config", str(file)),
                 ("replay", "--config", str(file))):
        out = run_cli(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert f"{path}:" in out.stderr
        assert "Traceback" not in out.stderr


def test_unparseable_yaml_and_missing_file_exit_2(tmp_path):
    file = tmp_path / "bad.yaml"
    file.write_text("models: [unclosed\n")
    out = run_cli("check-config", str(file))
    assert out.returncode == 2 and "not valid YAML" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("check-config", str(tmp_path / "missing.yaml"))
    assert out.returncode == 2 and "cannot read" in out.stderr


def test_shipped_configs_are_valid():
    root = Path(__file__).resolve().parents[2]
    for name in ("example.yaml", "demo.yaml"):
        out = run_cli("check-config", str(root / "config" / name))
        assert out.returncode == 0, out.stderr


def test_sigterm_and_sigint_exit_0_within_5s(daemon_factory, logs):
    for sig in (signal.SIGTERM, signal.SIGINT):
        d = daemon_factory({"sources": [source(logs / "p-*.jsonl")],
                            "models": {"fraud": model_config()}}).start()
        started = time.monotonic()
        assert d.stop(sig) == 0
        assert time.monotonic() - started < 5


def test_health_and_readiness_endpoints(daemon_factory, logs):
    import urllib.request

    d = daemon_factory({"sources": [source(logs / "p-*.jsonl")],
                        "models": {"fraud": model_config()}}).start()
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(f"http://127.0.0.1:{d.port}{path}", timeout=2) as r:
            assert r.status == 200
    samples = d.scrape()
    assert value(samples, "drift_monitor_build_info", version="0.1.0") == 1
    assert value(samples, "drift_monitor_checkpoint_failures_total") == 0
    assert d.stop() == 0


def test_demo_shows_the_metrics_url_and_a_live_table(tmp_path):
    import subprocess
    import sys
    import urllib.request

    from tests.system.conftest import free_port, parse_metrics

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "demo", "--port", str(port),
                             "--duration", "8"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        def scraped():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    samples = parse_metrics(r.read().decode())
            except OSError:
                return None
            return value(samples, "model_drift_predictions_total", model="fraud")

        assert wait_until(scraped, 15) > 0
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}/metrics" in out
    assert "kl" in out and "count:2000" in out
    assert "Traceback" not in err


def test_replay_reads_every_file_from_its_start_whatever_start_at_says(tmp_path, logs):
    import yaml

    append(logs / "p.jsonl", [{"probs": [0.2, 0.8], "label": 1}] * 5)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"sources": [source(logs / "p.jsonl", start_at="end")],
                                      "models": {"fraud": model_config()}}))
    out = run_cli("replay", "--config", str(config), "--json")
    assert out.returncode == 0, out.stderr
    got = {(m["name"], tuple(sorted(m["labels"].items()))): m["value"]
           for m in json.loads(out.stdout)["metrics"]}
    assert got[("model_drift_predictions_total", (("model", "fraud"),))] == 5


def test_openmetrics_scrape_parses_and_matches_the_text_format(daemon_factory, logs):
    import urllib.request

    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    append(logs / "p-1.jsonl", [{"ts": time.time(), "probs": [0.2, 0.8], "label": 1}] * 3)
    d = daemon_factory({"sources": [source(logs / "p-*.jsonl")],
                        "models": {"fraud": model_config()}}).start()
    d.wait_value("model_drift_predictions_total", 3, model="fraud")
    request = urllib.request.Request(f"http://127.0.0.1:{d.port}/metrics",
                                     headers={"Accept": "application/openmetrics-text"})
    with urllib.request.urlopen(request, timeout=5) as r:
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        text = r.read().decode()
    assert text.count("# EOF") == 1 and text.endswith("# EOF\n")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["model_drift_predictions"].samples[0].value == 3
    assert "drift_monitor_checkpoint_age_seconds" in families
    assert d.value("model_drift_kl_divergence", model="fraud", window="1h") == pytest.approx(
        families["model_drift_kl_divergence"].samples[0].value)
    assert d.stop() == 0
