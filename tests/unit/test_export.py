"""A Snapshot rendered as /metrics, parsed back with client_python's own parser."""

from __future__ import annotations

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from monitor.core.aggregate import Aggregator, Snapshot
from monitor.shell.config import build_config
from monitor.shell.export import Exposition, samples

from .strategies import ingest_predictions, line

NOW = 1_700_000_000.0


def snapshot() -> Snapshot:
    cfg = build_config({"sources": [{"name": "preds", "path": "/logs/p.jsonl", "model": "fraud"}],
                        "models": {"fraud": {"classes": ["legit", "fraud"], "windows": ["5m"],
                                             "min_samples": 1}}})
    aggregator = Aggregator(cfg)
    ingest_predictions(aggregator, cfg.sources[0], [
        line(probs=[0.9, 0.1], label="legit", ts=NOW - 1),
        line(probs=[0.2, 0.8], label="fraud", ts=NOW - 1),
        line(probs=[0.3, 0.7], ts=NOW - 1),
        b"not json",
    ], now=NOW)
    return aggregator.advance(NOW).snapshot()


def by_sample(text: str, parse=parse_text) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in parse(text) for s in family.samples}


def exposition(current: Snapshot | None, age_s: float = 2.5, failures: int = 3) -> Exposition:
    return Exposition(lambda: current, lambda: age_s, lambda: failures, lambda: {"preds": 1})


def test_a_snapshot_renders_as_the_counters_and_gauges_it_holds():
    body, content_type = exposition(snapshot()).render(None)
    assert content_type.startswith("text/plain")
    got = by_sample(body.decode())
    assert got[("model_drift_predictions_total", frozenset({("model", "fraud")}))] == 3
    assert got[("drift_monitor_lines_total", frozenset({("source", "preds"), ("status", "ok")}))] == 3
    assert got[("drift_monitor_lines_total",
                frozenset({("source", "preds"), ("status", "rejected")}))] == 1
    assert got[("model_drift_window_predictions",
                frozenset({("model", "fraud"), ("window", "5m")}))] == 3
    assert got[("drift_monitor_checkpoint_age_seconds", frozenset())] == 2.5
    assert got[("drift_monitor_checkpoint_failures_total", frozenset())] == 3
    assert got[("drift_monitor_source_files", frozenset({("source", "preds")}))] == 1


def test_before_the_first_checkpoint_only_the_daemons_own_health_is_served():
    got = by_sample(exposition(None).render(None)[0].decode())
    assert not any(name.startswith("model_drift_") for name, _ in got)
    assert got[("drift_monitor_checkpoint_failures_total", frozenset())] == 3


def test_openmetrics_has_the_same_samples_and_one_eof_at_the_end():
    current = snapshot()
    text = exposition(current).render(None)[0].decode()
    body, content_type = exposition(current).render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.count(b"# EOF") == 1 and body.endswith(b"# EOF\n")
    open_metrics = by_sample(body.decode(), parse_om)
    for key, v in by_sample(text).items():
        if key[0].startswith(("model_drift_", "drift_monitor_")) and not key[0].endswith("_created"):
            assert open_metrics[key] == v, key


def test_the_snapshot_part_is_rendered_once_per_snapshot_and_health_at_every_scrape():
    current = snapshot()
    ages = iter([1.0, 7.0])
    expo = Exposition(lambda: current, lambda: next(ages), lambda: 0, lambda: {})
    first, second = expo.render(None)[0], expo.render(None)[0]
    assert by_sample(first.decode())[("drift_monitor_checkpoint_age_seconds", frozenset())] == 1.0
    assert by_sample(second.decode())[("drift_monitor_checkpoint_age_seconds", frozenset())] == 7.0
    assert expo.cache["text/plain; version=0.0.4; charset=utf-8"][0] is current


def test_replay_json_samples_are_the_model_and_line_families():
    got = {(s["name"], frozenset(s["labels"].items())): s["value"] for s in samples(snapshot())}
    assert got[("model_drift_predictions_total", frozenset({("model", "fraud")}))] == 3
    assert got[("drift_monitor_lines_total", frozenset({("source", "preds"), ("status", "ok")}))] == 3
    assert not any(name.startswith("drift_monitor_checkpoint") for name, _ in got)
