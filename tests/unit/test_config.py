"""config.py: DESIGN.md's defaults, and bad configs reported all at once, each problem
naming its dotted key path (`models.fraud.windows[1]`, `sources[0].path`)."""

from __future__ import annotations

import dataclasses
import textwrap
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
import yaml
from pytest import approx

from monitor.core.errors import ConfigError, ConfigErrors
from monitor.core.settings import Fields, ReferenceSpec, WindowSpec
from monitor.shell.config import build_config, load_config, parse_duration

HUGE = "9" * 400  # no float holds it: float() raises OverflowError
MINIMAL = """
sources:
  - name: fraud
    path: /var/log/fraud/predictions-*.jsonl
models:
  fraud:
    classes: [legit, fraud]
"""


def build(text: str, base_dir: str = "/etc/drift-monitor"):
    return build_config(yaml.safe_load(textwrap.dedent(text)), base_dir)


def problems(text: str) -> dict[str, str]:
    """Key path -> message of every problem in a config."""
    with pytest.raises(ConfigErrors) as caught:
        build(text)
    errors = caught.value.errors
    assert all(isinstance(e, ConfigError) for e in errors)
    for e in errors:
        assert e.path and str(e).startswith(f"{e.path}: ")
    assert str(caught.value) == "\n".join(str(e) for e in errors)
    return {e.path: str(e) for e in errors}


def test_every_documented_default():
    config = build(MINIMAL)
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 9841)
    assert config.checkpoint_interval_s == 1.0
    assert config.max_models == 100
    assert config.max_line_bytes == 1 << 20
    assert config.sum_tolerance == 1e-3
    assert config.state_dir is None
    assert config.labels == ()
    assert config.default_model is None
    source = config.sources[0]
    assert source.start_at == "beginning"
    assert source.model is None
    assert source.fields == Fields(timestamp=("ts",), model=("model",), probabilities=("probs",),
                                   prediction=("prediction",), label=("label",), id=("id",))
    model = config.models["fraud"]
    assert model.classes == ("legit", "fraud")
    assert model.reference == ReferenceSpec("cumulative")
    assert model.min_samples == 100
    assert model.smoothing == 0.0
    assert model.epsilon == 1e-12


def test_the_design_example_config_reads_as_written():
    config = build("""
        listen: "127.0.0.1:9841"
        state_dir: /var/lib/drift-monitor
        checkpoint_interval: 1s
        sources:
          - name: fraud
            path: /var/log/fraud/predictions-*.jsonl
            model: fraud
            fields: {timestamp: ts, model: model, probabilities: probs, label: label, id: id}
            start_at: beginning
        labels:
          - name: fraud-feedback
            path: /var/log/fraud/labels-*.jsonl
            join_ttl: 24h
            max_pending: 1000000
        models:
          fraud:
            classes: [legit, fraud]
            reference: cumulative
            windows: [5m, 1h, {count: 10000}]
            min_samples: 100
            smoothing: 0
            epsilon: 1.0e-12
    """)
    fraud = config.models["fraud"]
    assert fraud.windows == (WindowSpec("5m", duration_s=300.0), WindowSpec("1h", duration_s=3600.0),
                             WindowSpec("count:10000", count=10000))
    label_source = config.labels[0]
    assert (label_source.join_ttl_s, label_source.max_pending) == (86400.0, 1_000_000)
    assert config.state_dir == "/var/lib/drift-monitor"


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("7d", 604800.0), ("500ms", 0.5), ("1.5h", 5400.0),
    (45, 45.0), (0.25, 0.25),
])
def test_durations(text, seconds):
    assert parse_duration(text) == approx(seconds)


@pytest.mark.parametrize("bad", ["5 minutes", "5", "-5m", "0s", "m", "", True, None, "5M", "1y"])
def test_bad_durations_are_value_errors(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(("reference", "spec"), [
    ("cumulative", ReferenceSpec("cumulative")),
    ("{window: 7d}", ReferenceSpec("window", duration_s=604800.0)),
    ("{decay: 6h}", ReferenceSpec("decay", half_life_s=21600.0)),
    ("{static: [0.9, 0.1]}", ReferenceSpec("static", prior=(0.9, 0.1))),
])
def test_each_reference_kind(reference, spec):
    config = build(MINIMAL + f"    reference: {reference}\n")
    assert config.models["fraud"].reference == spec


def test_default_template_is_not_a_model_stream():
    config = build(MINIMAL + "  default:\n    classes: [a, b, c]\n")
    assert list(config.models) == ["fraud"]
    assert config.default_model is not None and config.default_model.classes == ("a", "b", "c")


def test_dotted_field_paths_are_split():
    config = build("""
        sources:
          - name: s
            path: /x
            fields: {probabilities: output.scores, timestamp: meta.time}
        models: {m: {classes: [a, b]}}
    """)
    assert config.sources[0].fields.probabilities == ("output", "scores")
    assert config.sources[0].fields.timestamp == ("meta", "time")


def test_relative_paths_are_resolved_against_the_config_files_folder():
    config = build("""
        state_dir: state
        sources:
          - {name: rel, path: logs/predictions-*.jsonl}
          - {name: up, path: ../shared/p.jsonl}
          - {name: abs, path: /var/log/p.jsonl}
        labels:
          - {name: l, path: labels/*.jsonl}
        models: {m: {classes: [a, b]}}
    """, base_dir="/srv/monitor")
    assert [s.path for s in config.sources] == [
        "/srv/monitor/logs/predictions-*.jsonl", "/srv/shared/p.jsonl", "/var/log/p.jsonl"]
    assert config.labels[0].path == "/srv/monitor/labels/*.jsonl"
    assert config.state_dir == "/srv/monitor/state"


BAD = [
    ("unknown top-level key", MINIMAL + "listne: x\n", "listne"),
    ("unknown model key", MINIMAL + "    window: [5m]\n", "models.fraud.window"),
    ("unknown source key", MINIMAL.replace("    path:", "    paht: x\n    path:"), "sources[0].paht"),
    ("unknown fields key", MINIMAL.replace("    path:", "    fields: {probs: p}\n    path:"),
     "sources[0].fields.probs"),
    ("wrong type", MINIMAL + "max_models: many\n", "max_models"),
    ("wrong type of listen", MINIMAL + "listen: 9841\n", "listen"),
    ("bad listen", MINIMAL + "listen: localhost\n", "listen"),
    ("bad duration", MINIMAL + "checkpoint_interval: 5x\n", "checkpoint_interval"),
    ("bad window", MINIMAL + "    windows: [5m, 5 minutes]\n", "models.fraud.windows[1]"),
    ("bad count window", MINIMAL + "    windows: [5m, {count: 0}]\n", "models.fraud.windows[1]"),
    ("bad window key", MINIMAL + "    windows: [5m, {size: 10}]\n", "models.fraud.windows[1]"),
    ("duplicate window", MINIMAL + "    windows: [5m, 5m]\n", "models.fraud.windows[1]"),
    ("static prior wrong length", MINIMAL + "    reference: {static: [0.2, 0.3, 0.5]}\n",
     "models.fraud.reference.static"),
    ("static prior not summing to 1", MINIMAL + "    reference: {static: [0.5, 0.6]}\n",
     "models.fraud.reference.static"),
    ("static prior negative", MINIMAL + "    reference: {static: [-0.5, 1.5]}\n",
     "models.fraud.reference.static"),
    ("bad decay", MINIMAL + "    reference: {decay: soon}\n", "models.fraud.reference.decay"),
    ("bad reference", MINIMAL + "    reference: cumulitive\n", "models.fraud.reference"),
    ("bad min_samples", MINIMAL + "    min_samples: -1\n", "models.fraud.min_samples"),
    ("bad epsilon", MINIMAL + "    epsilon: 0\n", "models.fraud.epsilon"),
    ("one class", MINIMAL.replace("[legit, fraud]", "[legit]"), "models.fraud.classes"),
    ("missing path", MINIMAL.replace("    path: /var/log/fraud/predictions-*.jsonl\n", ""),
     "sources[0].path"),
    ("bad start_at", MINIMAL.replace("    path:", "    start_at: middle\n    path:"), "sources[0].start_at"),
    ("source model not configured", MINIMAL.replace("    path:", "    model: spam\n    path:"),
     "sources[0].model"),
    ("bad join_ttl", MINIMAL + "labels:\n  - {name: l, path: /l, join_ttl: forever}\n", "labels[0].join_ttl"),
    ("bad max_pending", MINIMAL + "labels:\n  - {name: l, path: /l, max_pending: 0}\n",
     "labels[0].max_pending"),
    ("duplicate source name", MINIMAL + "labels:\n  - {name: fraud, path: /l}\n", "labels[0].name"),
    ("no models", "sources: [{name: s, path: /x}]\n", "models"),
    ("no sources", "models: {m: {classes: [a, b]}}\n", "sources"),
    ("too many models", MINIMAL + "  spam: {classes: [a, b]}\nmax_models: 1\n", "models"),
    # Numbers no float holds, and bounds on what one setting can make the daemon allocate.
    ("huge sum_tolerance", MINIMAL + f"sum_tolerance: {HUGE}\n", "sum_tolerance"),
    ("sum_tolerance above 1", MINIMAL + "sum_tolerance: 2\n", "sum_tolerance"),
    ("huge duration", MINIMAL + f"checkpoint_interval: {HUGE}\n", "checkpoint_interval"),
    ("huge duration with unit", MINIMAL + f"checkpoint_interval: {HUGE}s\n", "checkpoint_interval"),
    ("huge window", MINIMAL + f"    windows: [5m, {HUGE}]\n", "models.fraud.windows[1]"),
    ("window beyond ten years", MINIMAL + "    windows: [5m, 4000d]\n", "models.fraud.windows[1]"),
    ("huge decay", MINIMAL + f"    reference: {{decay: {HUGE}}}\n", "models.fraud.reference.decay"),
    ("huge static prior", MINIMAL + f"    reference: {{static: [{HUGE}, 1]}}\n",
     "models.fraud.reference.static"),
    ("huge count window", MINIMAL + f"    windows: [{{count: {HUGE}}}]\n", "models.fraud.windows[0]"),
    ("max_line_bytes too large", MINIMAL + "max_line_bytes: 1000000000000\n", "max_line_bytes"),
    ("max_models too large", MINIMAL + "max_models: 10000000000000\n", "max_models"),
    ("max_pending too large", MINIMAL + "labels:\n  - {name: l, path: /l, max_pending: 10000000000000}\n",
     "labels[0].max_pending"),
    ("nanosecond checkpoint_interval", MINIMAL + "checkpoint_interval: 0.000000001\n",
     "checkpoint_interval"),
    ("nanosecond poll_interval", MINIMAL + "poll_interval: 0.000000001\n", "poll_interval"),
    ("NUL in path", MINIMAL.replace("/var/log/fraud/predictions-*.jsonl", '"/p\\0.jsonl"'),
     "sources[0].path"),
    ("NUL in state_dir", MINIMAL + 'state_dir: "/var/lib/\\0"\n', "state_dir"),
    ("NUL in label path", MINIMAL + 'labels:\n  - {name: l, path: "/l\\0"}\n', "labels[0].path"),
    ("zero max_id_bytes", MINIMAL + "max_id_bytes: 0\n", "max_id_bytes"),
    ("max_id_bytes too large", MINIMAL + "max_id_bytes: 1000000000\n", "max_id_bytes"),
    ("bad max_clock_skew", MINIMAL + "max_clock_skew: ahead\n", "max_clock_skew"),
    ("unknown time zone", MINIMAL.replace("    path:", "    timezone: Mars/Olympus\n    path:"),
     "sources[0].timezone"),
    ("time zone as a path", MINIMAL.replace("    path:", "    timezone: ../../etc/passwd\n    path:"),
     "sources[0].timezone"),
    ("label time zone not a string", MINIMAL + "labels:\n  - {name: l, path: /l, timezone: 2}\n",
     "labels[0].timezone"),
]


@pytest.mark.parametrize(("text", "path"), [(t, p) for _, t, p in BAD], ids=[n for n, _, _ in BAD])
def test_each_bad_config_names_its_key_path(text, path):
    found = problems(text)
    assert found, "no problem reported"
    for where, message in found.items():
        # The path itself, or a key inside it (`models.fraud.windows[1].count`).
        assert where == path or where.startswith((f"{path}.", f"{path}[")), where
        assert message.startswith(f"{where}: ")


def test_all_problems_are_reported_at_once():
    found = problems("""
        listen: nowhere
        bogus: 1
        checkpoint_interval: soon
        sources:
          - name: fraud
            fields: {probabilities: 3}
        labels:
          - {name: feedback, path: /l, join_ttl: 1 day}
        models:
          fraud:
            classes: [legit, fraud]
            windows: [5m, 1 hour, {count: -1}]
            reference: {static: [0.5, 0.6]}
            colour: blue
          spam:
            classes: spam
    """)
    assert set(found) == {
        "listen", "bogus", "checkpoint_interval", "sources[0].path", "sources[0].fields.probabilities",
        "labels[0].join_ttl", "models.fraud.windows[1]", "models.fraud.windows[2].count",
        "models.fraud.reference.static", "models.fraud.colour", "models.spam.classes",
    }


def test_an_empty_config_says_what_is_required():
    with pytest.raises(ConfigErrors) as caught:
        build_config(None, "/etc")
    assert {e.path for e in caught.value.errors} == {"sources", "models"}


def test_config_errors_exit_with_code_2():
    assert ConfigErrors([ConfigError("x", "y")]).exit_code == 2
    assert ConfigError("models.fraud.windows[1]", "bad").exit_code == 2
    assert str(ConfigError("models.fraud.windows[1]", "bad")) == "models.fraud.windows[1]: bad"


def test_config_is_frozen():
    config = build(MINIMAL)
    with pytest.raises(AttributeError):
        config.max_models = 5  # type: ignore[misc]
    assert isinstance(config.sources, tuple)
    assert isinstance(config.models["fraud"].windows, tuple)


LAUGHS = "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
HOSTILE_FILES = [
    ("nested 1,000 deep", MINIMAL + "x: " + "[" * 1000 + "]" * 1000 + "\n", "x[0][0]",
     "nested deeper than 64"),
    ("mappings nested 1,000 deep", MINIMAL + "x: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n",
     "x.a.a", "nested deeper than 64"),
    # A billion laughs: 9^9 "lol"s from a few hundred bytes.
    ("alias bomb", MINIMAL + "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + LAUGHS, "f: more than",
     "once aliases are expanded"),
    ("alias bomb under a known key", MINIMAL + "    windows: [&a [5m, 5m, 5m, 5m, 5m, 5m, 5m, 5m, 5m], "
     + ", ".join(f"&{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")) + "]\n",
     "models: more than", "once aliases are expanded"),
    ("an alias to itself", MINIMAL + "x: &x [*x]\n", "x: more than", "once aliases are expanded"),
    ("python object tag", MINIMAL + "x: !!python/object/apply:os.system [echo hi]\n", "python/object/apply",
     "could not determine a constructor"),
    ("larger than 1 MiB", MINIMAL + "# " + "x" * (1 << 20) + "\n", "config.yaml", "larger than 1 MiB"),
    ("not UTF-8", MINIMAL + "# \xff\n", "config.yaml", "not valid YAML"),
]


@pytest.mark.parametrize(("text", "where", "message"), [(t, w, m) for _, t, w, m in HOSTILE_FILES],
                         ids=[n for n, _, _, _ in HOSTILE_FILES])
def test_hostile_config_files_are_config_errors_naming_where(tmp_path, text, where, message):
    file = tmp_path / "config.yaml"
    file.write_bytes(text.encode("latin-1") if "\xff" in text else text.encode())
    with pytest.raises(ConfigErrors) as caught:
        load_config(str(file))
    (error,) = caught.value.errors
    assert where in str(error) and message in str(error), str(error)
    assert len(str(error)) < 1000


def test_aliases_within_the_bounds_still_work(tmp_path):
    file = tmp_path / "config.yaml"
    file.write_text(MINIMAL + "  spam: &shared {classes: [a, b], windows: [5m]}\n  eggs: *shared\n")
    config = load_config(str(file))
    assert config.models["spam"] == config.models["eggs"]


def test_a_value_quoted_in_a_message_stays_short():
    found = problems(MINIMAL + "    windows: [" + ", ".join(["[" + ", ".join(["9" * 100] * 50) + "]"] * 50)
                     + "]\n")
    assert all(len(message) < 300 for message in found.values())


def test_timezone_is_an_iana_zone_defaulting_to_utc():
    config = build(MINIMAL.replace("    path:", "    timezone: Europe/Berlin\n    path:")
                   + "labels:\n  - {name: l, path: /l}\n")
    assert config.sources[0].timezone == ZoneInfo("Europe/Berlin")
    assert config.labels[0].timezone.utcoffset(None) == timedelta(0)


def test_max_id_bytes_and_max_clock_skew_defaults_and_settings():
    config = build(MINIMAL)
    assert (config.max_id_bytes, config.max_clock_skew_s) == (256, 300.0)
    config = build(MINIMAL + "max_id_bytes: 64\nmax_clock_skew: 1h\n")
    assert (config.max_id_bytes, config.max_clock_skew_s) == (64, 3600.0)


def test_the_built_config_is_frozen_all_the_way_down():
    config = build_config({"sources": [{"name": "p", "path": "p.log"}],
                           "models": {"m": {"classes": ["a", "b"], "windows": ["5m"]}}})
    with pytest.raises(TypeError):
        config.models["other"] = config.models["m"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_models = 1  # type: ignore[misc]
