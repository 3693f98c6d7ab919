"""config.py for the integrations: `format`, `timezone` and `http_sources`, each problem
reported with its key path; an http source reads its spool as a prediction source."""

from __future__ import annotations

import textwrap
from zoneinfo import ZoneInfo

import pytest
import yaml

from monitor.core.errors import ConfigErrors
from monitor.core.settings import BENTOML_FIELDS, Fields
from monitor.shell.config import build_config

MODELS = "models: {fraud: {classes: [legit, fraud]}}\n"


def build(text: str):
    return build_config(yaml.safe_load(textwrap.dedent(text) + MODELS), "/etc/dm")


def problems(text: str) -> dict[str, str]:
    with pytest.raises(ConfigErrors) as caught:
        build(text)
    return {e.path: str(e) for e in caught.value.errors}


def test_http_sources_alone_make_a_config_and_read_their_spool():
    config = build("""
        state_dir: state
        http_sources: [{name: kserve, path: /kserve/fraud, format: kserve, model: fraud}]
    """)
    (http,) = config.http_sources
    assert (http.output, http.max_spool_bytes) == (None, 256 << 20)
    (spool,) = config.sources
    assert (spool.name, spool.path, spool.model, spool.format) == (
        "kserve", "/etc/dm/state/spool/kserve/*.jsonl", "fraud", "kserve")


def test_bad_http_sources_are_reported_with_their_key_paths():
    found = problems("""
        http_sources:
          - {name: a, path: kserve, format: kserve, max_spool_bytes: 10}
          - {name: b, path: /metrics, format: seldon}
          - {name: c, path: /x, format: kserve, model: nope}
          - {name: d, path: /x, format: kserve}
          - {name: e, format: kserve, listen: x}
    """)
    assert set(found) == {
        "http_sources", "http_sources[0].path", "http_sources[0].max_spool_bytes",
        "http_sources[1].path", "http_sources[1].format", "http_sources[2].model",
        "http_sources[3].path", "http_sources[4].path", "http_sources[4].listen"}
    assert "needs state_dir" in found["http_sources"]


def test_no_prediction_source_of_any_kind_is_an_error():
    assert "sources" in problems("sources: []\n")


def test_formats_and_their_field_defaults():
    config = build("""
        sources:
          - {name: a, path: /a, format: bentoml}
          - {name: b, path: /b, format: bentoml, fields: {probabilities: scores, id: rid}}
          - {name: c, path: /c, format: sagemaker, timezone: Europe/Berlin}
        labels: [{name: d, path: /d, format: sagemaker}]
    """)
    a, b, c = config.sources
    assert a.fields == BENTOML_FIELDS
    assert (a.fields.timestamp, a.fields.id, a.fields.probabilities) == (("timestamp",), ("request_id",), ())
    assert (b.fields.probabilities, b.fields.id) == (("scores",), ("rid",))
    assert b.fields.timestamp == ("timestamp",)
    assert (c.fields, c.timezone, c.format) == (Fields(), ZoneInfo("Europe/Berlin"), "sagemaker")
    assert config.labels[0].format == "sagemaker"


def test_unknown_format_and_zone_name_their_keys():
    found = problems("""
        sources: [{name: a, path: /a, format: csv, timezone: Nowhere/Special}]
        labels: [{name: b, path: /b, format: kserve}]
    """)
    assert set(found) == {"sources[0].format", "sources[0].timezone", "labels[0].format"}
