"""Fuzzing the config loader: whatever the file holds (arbitrary bytes, arbitrary YAML,
a valid config with one value replaced by something hostile), loading it returns a
Config or raises ConfigErrors, each error naming where; nothing else escapes, so
`check-config` exits 2 and SIGHUP keeps the running config."""

from __future__ import annotations

import os
import tempfile

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.core.errors import ConfigError, ConfigErrors
from monitor.core.settings import Config
from monitor.shell.config import build_config, load_config

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID = {
    "listen": "127.0.0.1:9841", "state_dir": "/var/lib/drift-monitor", "checkpoint_interval": "1s",
    "max_line_bytes": 1048576, "max_id_bytes": 256, "max_clock_skew": "5m", "sum_tolerance": 1e-3,
    "sources": [{"name": "fraud", "path": "/var/log/p-*.jsonl", "model": "fraud",
                 "fields": {"timestamp": "ts", "probabilities": "out.probs"}, "timezone": "UTC"}],
    "labels": [{"name": "fb", "path": "/var/log/l-*.jsonl", "join_ttl": "24h", "max_pending": 1000}],
    "models": {"fraud": {"classes": ["legit", "fraud"], "reference": {"decay": "6h"},
                         "windows": ["5m", {"count": 100}], "min_samples": 10, "smoothing": 0,
                         "epsilon": 1e-12},
               "default": {"classes": ["a", "b"], "reference": {"static": [0.5, 0.5]}}},
}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**400),
    st.floats(), st.text(max_size=20), st.sampled_from(["5m", "0s", "1ns", "-1s", "9" * 400 + "s",
                                                        "Europe/Berlin", "Mars/Base", "/x\0y", ""]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8) | st.integers(), inner,
                                                 max_size=4)), max_leaves=20)


def paths(doc: object, prefix: tuple = ()) -> list[tuple]:
    """Every place in a document where a value can be replaced."""
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += paths(value, (*prefix, i))
    return out


def replaced(doc: object, path: tuple, value: object) -> object:
    if not path:
        return value
    copy = dict(doc) if isinstance(doc, dict) else list(doc)  # type: ignore[call-overload]
    copy[path[0]] = replaced(copy[path[0]], path[1:], value)
    return copy


ALL_PATHS = paths(VALID)[1:]


def loads_or_config_errors(text: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        file = os.path.join(folder, "config.yaml")
        with open(file, "wb") as fh:
            fh.write(text)
        try:
            assert isinstance(load_config(file), Config)
        except ConfigErrors as exc:
            assert exc.errors and all(isinstance(e, ConfigError) and str(e) for e in exc.errors)


@FUZZ
@given(st.sampled_from(ALL_PATHS), values)
def test_a_valid_config_with_one_value_replaced_is_a_config_or_config_errors(path, value):
    doc = replaced(VALID, path, value)
    try:
        assert isinstance(build_config(doc, "/etc"), Config)
    except ConfigErrors as exc:
        assert exc.errors and all(isinstance(e, ConfigError) and e.path for e in exc.errors)


@FUZZ
@given(values)
def test_arbitrary_yaml_documents_are_a_config_or_config_errors(doc):
    loads_or_config_errors(yaml.safe_dump(doc, allow_unicode=True).encode("utf-8", "surrogatepass"))


YAML_FRAGMENTS = st.sampled_from([
    "&a ", "*a", "&b [*a, *a, *a]", "!!python/object:os.system ", "!!binary ", "!!set ", "!!timestamp ",
    "!!float ", "!!int ", "? ", ": ", "- ", "[", "]", "{", "}", "\n", "  ", "<<: *a", "'", '"', "|", ">",
    "%YAML 1.1\n", "---\n", "...\n", "\t", "\x00", "\ufeff", "9" * 400, ".inf", ".nan", "~",
    "sources:", "models:", "windows:", "{count: ", "reference:", "static: ",
])


@FUZZ
@given(st.lists(st.one_of(YAML_FRAGMENTS, st.text(max_size=10)), max_size=40))
def test_arbitrary_yaml_text_is_a_config_or_config_errors(parts):
    loads_or_config_errors("".join(parts).encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_a_config_or_config_errors(data):
    loads_or_config_errors(data)
