"""formats.py: BentoML and SageMaker records give exactly what the same predictions
written as plain JSON Lines give (every snapshot value to 1e-12), rejects keep their
source line numbers, and labels read by index, class name, or digits."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.core.aggregate import Aggregator
from monitor.core.errors import ConfigErrors
from monitor.core.formats import Columns, schema_columns, transcode
from monitor.core.parse import Reason, class_index
from monitor.shell.config import build_config

from .strategies import assert_same_snapshot, distributions, ingest_predictions, line

CLASSES = ["legit", "fraud", "review"]
T0 = 1_790_000_000.0  # 2026-09-21T14:13:20Z
WHEN = "2026-09-21T14:28:20Z"  # T0 + 900: inside every window at T0 + 1000


def config(source: dict, labels: dict | None = None):
    raw = {"sources": [{"name": "preds", "path": "/logs/p", **source}],
           "models": {"m": {"classes": CLASSES, "windows": ["5m", {"count": 7}], "min_samples": 1}}}
    if labels is not None:
        raw["labels"] = [{"name": "truth", "path": "/logs/l", **labels}]
    return build_config(yaml.safe_load(yaml.safe_dump(raw)))


def run(cfg, predictions: list[bytes], labels: list[bytes] = (), columns: Columns | None = None):
    agg = Aggregator(cfg)
    columns = columns or Columns()
    rejects = agg.ingest_predictions(cfg.sources[0], b"".join(x + b"\n" for x in predictions),
                                     len(predictions), T0 + 1000, T0 + 1000, columns)
    if labels:
        rejects += agg.ingest_labels(cfg.labels[0], b"".join(x + b"\n" for x in labels), len(labels),
                                     T0 + 1000, T0 + 1000, columns)
    return agg.advance(T0 + 1000).snapshot(), rejects


def native(rows, labels=None):
    """The same predictions as plain JSON Lines (and labels, from a label log): the oracle."""
    cfg = config({"model": "m"}, {"model": "m"} if labels is not None else None)
    preds = [line(ts=ts, id=rid, probs=list(p), **({} if y is None else {"label": y}))
             for ts, rid, p, y in rows]
    return run(cfg, preds, [line(id=rid, label=y) for rid, y in labels or ()])[0]


rows_strategy = st.lists(
    st.tuples(st.floats(T0, T0 + 900), distributions(3), st.sampled_from([None, 0, 1, 2])),
    min_size=1, max_size=12)


@given(rows_strategy, st.sampled_from(["UTC", "Europe/Berlin", "America/Los_Angeles"]))
@settings(max_examples=60, deadline=None)
def test_bentoml_lines_count_as_the_same_jsonl_lines(rows, zone):
    # BentoML's DefaultMonitor: datetime.now().isoformat() (naive local time), request_id
    # as a decimal string, columns named as logged; the schema gives their roles.
    local = ZoneInfo(zone)
    stamped = [(datetime.fromtimestamp(ts, local).replace(tzinfo=None), p, y) for ts, p, y in rows]
    lines = [line(**{"features": [1.0, 2.0], "scores": list(p), **({} if y is None else {"truth": y}),
                     "timestamp": naive.isoformat(), "request_id": str(1000 + i), "trace_id": "7"})
             for i, (naive, p, y) in enumerate(stamped)]
    got, rejects = run(config({"model": "m", "format": "bentoml", "timezone": zone}), lines,
                       columns=Columns(prediction="scores", target="truth"))
    assert rejects == []
    oracle = [(datetime.fromisoformat(naive.isoformat()).replace(tzinfo=local).timestamp(),
               str(1000 + i), p, y) for i, (naive, p, y) in enumerate(stamped)]
    assert_same_snapshot(got, native(oracle))


def test_bentoml_fields_override_the_schema_and_a_scalar_prediction_is_hard():
    lines = [line(cls="fraud", prob=[0.1, 0.8, 0.1], y="1", timestamp="2026-09-21T10:00:00",
                  request_id="5")]
    named, _ = run(config({"model": "m", "format": "bentoml", "fields": {"probabilities": "prob",
                                                                          "label": "y"}}),
                   lines, columns=Columns(prediction="cls"))
    hard, _ = run(config({"model": "m", "format": "bentoml"}), lines,
                  columns=Columns(prediction="cls", target="y"))
    ts = datetime.fromisoformat("2026-09-21T10:00:00+00:00").timestamp()
    assert_same_snapshot(named, native([(ts, "5", [0.1, 0.8, 0.1], 1)]))
    assert_same_snapshot(hard, native([(ts, "5", [0.0, 1.0, 0.0], 1)]))


def test_bentoml_without_a_schema_rejects_as_missing_field():
    _, rejects = run(config({"model": "m", "format": "bentoml"}),
                     [line(scores=[0.2, 0.3, 0.5], timestamp="2026-09-21T10:00:00")])
    assert [r.reason for r in rejects] == [Reason.MISSING_FIELD]


def test_schema_roles_first_of_each_newest_line_wins():
    old = {"meta_data": {}, "columns": [{"name": "x", "role": "prediction", "type": "numerical"}]}
    new = {"meta_data": {"bento_name": "svc"}, "columns": [
        {"name": "f", "role": "feature", "type": "numerical"},
        {"name": "p", "role": "prediction", "type": "numerical_sequence"},
        {"name": "p2", "role": "prediction", "type": "categorical"},
        {"name": "y", "role": "target", "type": "categorical"}]}
    text = "\n".join([json.dumps(old), "not json", json.dumps(new), ""])
    assert schema_columns(text) == Columns(prediction="p", target="y")
    assert schema_columns("") == Columns()


def capture(output: str, encoding: str, content_type: str, event_id: str, when: str,
            inference_id: str | None = None) -> bytes:
    """A SageMaker Data Capture record, in the documented shape."""
    meta = {"eventId": event_id, "inferenceTime": when}
    if inference_id is not None:
        meta["inferenceId"] = inference_id
    return line(captureData={
        "endpointInput": {"observedContentType": content_type, "mode": "INPUT",
                          "data": "1.0,2.0", "encoding": "CSV"},
        "endpointOutput": {"observedContentType": content_type, "mode": "OUTPUT",
                           "data": output, "encoding": encoding}},
        eventMetadata=meta, eventVersion="0")


def encoded(p, y_json: bool, encoding: str) -> tuple[str, str, str]:
    """(data, encoding, content type) of one output in each of the four encodings."""
    text = json.dumps({"scores": list(p)}) if y_json else ",".join(repr(float(x)) for x in p)
    kind = "application/json" if y_json else "text/csv"
    if encoding == "BASE64":
        return base64.b64encode(text.encode()).decode(), "BASE64", kind
    return text, "JSON" if y_json else "CSV", kind


@given(rows_strategy, st.sampled_from([(True, "JSON"), (False, "CSV"), (True, "BASE64"),
                                       (False, "BASE64")]))
@settings(max_examples=60, deadline=None)
def test_sagemaker_captures_and_ground_truth_count_as_the_same_jsonl_lines(rows, encoding):
    as_json, enc = encoding
    records, truth, oracle_rows, oracle_labels = [], [], [], []
    for i, (ts, p, y) in enumerate(rows):
        when = datetime.fromtimestamp(ts, ZoneInfo("UTC")).isoformat().replace("+00:00", "Z")
        data, e, kind = encoded(p, as_json, enc)
        # inferenceId when the caller gave one, else the eventId: what ground truth names.
        inference = f"inf-{i}" if i % 2 else None
        rid = inference or f"ev-{i}"
        records.append(capture(data, e, kind, f"ev-{i}", when, inference))
        oracle_rows.append((datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp(), rid, p, None))
        if y is not None:
            label = str(y) if as_json else CLASSES[y]  # digits or class names
            gt = {"data": json.dumps(label) if as_json else label, "encoding": "JSON" if as_json else "CSV"}
            truth.append(line(groundTruthData=gt, eventMetadata={"eventId": rid}, eventVersion="0"))
            oracle_labels.append((rid, y))
    fields = {"fields": {"probabilities": "scores"}} if as_json else {}
    got, rejects = run(config({"model": "m", "format": "sagemaker", **fields},
                              {"model": "m", "format": "sagemaker"}), records, truth)
    assert rejects == []
    assert_same_snapshot(got, native(oracle_rows, oracle_labels))


def test_sagemaker_single_csv_column_is_a_hard_prediction():
    got, _ = run(config({"model": "m", "format": "sagemaker"}),
                 [capture("review", "CSV", "text/csv", "e1", WHEN),
                  capture("1", "CSV", "text/csv", "e2", WHEN)])
    ts = datetime.fromisoformat(WHEN.replace("Z", "+00:00")).timestamp()
    assert_same_snapshot(got, native([(ts, "e1", [0, 0, 1.0], None), (ts, "e2", [0, 1.0, 0], None)]))


def test_rejects_keep_their_source_line_numbers():
    good = capture("0.2,0.3,0.5", "CSV", "text/csv", "e1", WHEN)
    lines = [good, b"{not json", capture("!!", "BASE64", "text/csv", "e2", WHEN),
             b"", capture("0.2,0.3", "CSV", "text/csv", "e3", WHEN),
             capture("0.2,0.3,0.5", "CSV", "text/csv", "e4", "yesterday"),
             capture("0.5,0.5,0.5", "CSV", "text/csv", "e5", WHEN), good]
    snapshot, rejects = run(config({"model": "m", "format": "sagemaker"}), lines)
    assert [(r.index, r.reason) for r in rejects] == [
        (1, Reason.NOT_JSON), (2, Reason.NOT_UTF8), (4, Reason.WRONG_LENGTH),
        (5, Reason.BAD_TIMESTAMP), (6, Reason.BAD_SUM)]
    counts = snapshot.sources[0]
    assert counts.lines == {"ok": 2, "rejected": 5, "late": 0}  # the blank line is neither


def test_transcode_passes_spool_lines_through_and_reads_refusals_and_skips_headers():
    data = b'{"segment":"1:ab12"}\n{"ts":1.0,"id":"a","probs":[0.5,0.5]}\n{"rejected":"not_json"}\n'
    block = transcode("kserve", data, build_config(yaml.safe_load(
        "{sources: [{name: s, path: /x}], models: {m: {classes: [a, b]}}}")).sources[0].fields,
        ZoneInfo("UTC"), False)
    assert block.data == b'{"ts":1.0,"id":"a","probs":[0.5,0.5]}\n'
    assert (block.origin, block.blank) == ([1], 1)
    assert [(r.index, r.reason) for r in block.rejects] == [(2, Reason.NOT_JSON)]


@pytest.mark.parametrize(("value", "index"), [(1, 1), ("fraud", 1), ("2", 2), ("0", 0)])
def test_labels_are_indices_class_names_or_digits(value, index):
    assert class_index(value, CLASSES) == index


def test_a_class_named_by_digits_wins_over_the_index_it_spells():
    assert class_index("1", ["0", "2", "1"]) == 2
    with pytest.raises(ValueError):
        class_index("3", CLASSES)
    with pytest.raises(ValueError):
        class_index("-1", CLASSES)


def test_digit_labels_take_the_fast_path_and_the_plain_path_alike():
    cfg = config({"model": "m"})
    fast = [line(ts=T0, probs=[0.2, 0.3, 0.5], label="2")]
    plain = [line(ts=T0, probs={"legit": 0.2, "fraud": 0.3, "review": 0.5}, label="2")]
    a, b = Aggregator(cfg), Aggregator(cfg)
    assert ingest_predictions(a, cfg.sources[0], fast, T0) == []
    assert ingest_predictions(b, cfg.sources[0], plain, T0) == []
    assert_same_snapshot(a.advance(T0).snapshot(), b.advance(T0).snapshot())
    assert list(a.advance(T0).snapshot().models[0].labels_total) == [0, 0, 1]


def test_timezone_applies_to_offsetless_jsonl_timestamps():
    cfg = config({"model": "m", "timezone": "Asia/Tokyo"})
    agg = Aggregator(cfg)
    ingest_predictions(agg, cfg.sources[0], [line(ts="2026-09-21T09:00:00", probs=[1, 0, 0])], T0)
    expected = datetime.fromisoformat("2026-09-21T00:00:00+00:00").timestamp()
    assert agg.advance(T0).snapshot().models[0].last_event_ts == expected


def test_an_unknown_timezone_is_a_config_error_naming_its_key():
    with pytest.raises(ConfigErrors) as caught:
        config({"model": "m", "timezone": "Mars/Olympus"})
    assert [e.path for e in caught.value.errors] == ["sources[0].timezone"]


def test_bentoml_label_source_joins_its_target_column_by_request_id():
    # A second monitor logging only the ground truth, later, under the same request ids.
    cfg = config({"model": "m", "format": "bentoml"}, {"model": "m", "format": "bentoml"})
    preds = [line(scores=[0.2, 0.3, 0.5], timestamp="2026-09-21T14:25:00", request_id=str(i))
             for i in range(3)]
    truth = [line(y=name, timestamp="2026-09-21T14:28:00", request_id=str(i))
             for i, name in enumerate(["review", "legit", "2"])]
    got, rejects = run(cfg, preds, truth, Columns(prediction="scores", target="y"))
    assert rejects == []
    ts = datetime.fromisoformat("2026-09-21T14:25:00+00:00").timestamp()
    assert_same_snapshot(got, native([(ts, str(i), [0.2, 0.3, 0.5], None) for i in range(3)],
                                     [("0", 2), ("1", 0), ("2", 2)]))
    assert list(got.models[0].labels_total) == [1, 0, 2]
