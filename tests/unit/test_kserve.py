"""kserve.py: payload-logger events, built with the CloudEvents SDK in binary mode as
KServe's pkg/logger/worker.go sends them, become one spool line per row (id ce-id, or
ce-id#row), read by the parser like any log; bodies that are not predictions become one
refusal line with its reason; request events nothing."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
import yaml
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent

from monitor.core.aggregate import Aggregator
from monitor.core.kserve import spool_lines
from monitor.core.parse import Reason
from monitor.shell.config import build_config

from .strategies import assert_same_snapshot, ingest_predictions, line

T0 = 1_790_000_000.0
RESPONSE = "org.kubeflow.serving.inference.response"
REQUEST = "org.kubeflow.serving.inference.request"


def logger_event(body: object, kind: str = RESPONSE, event_id: str = "7f2c-1",
                 time: str | None = "2026-09-21T14:15:00Z") -> tuple[dict[str, str], bytes]:
    """Headers (lower case, as the receiver sees them) and body of one logger POST."""
    attributes = {"id": event_id, "type": kind, "source": "http://localhost:9081/",
                  "specversion": "1.0", "inferenceservicename": "fraud", "namespace": "default",
                  "component": "predictor", "endpoint": "default", "metadata": "{}",
                  "datacontenttype": "application/json"}
    if time is not None:  # the Go client stamps every event (cloudevents.WithTimeNow)
        attributes["time"] = datetime.fromisoformat(time.replace("Z", "+00:00"))
    message = to_binary_event(CloudEvent(attributes, body if isinstance(body, bytes)
                                         else json.dumps(body).encode()))
    headers = {k.lower(): v for k, v in message.headers.items()}
    if time is None:  # the SDK stamps it anyway
        del headers["ce-time"]
    return headers, message.body


def rows(event) -> list[dict]:
    return [json.loads(x) for x in event.lines.splitlines()]


def test_binary_mode_headers_are_what_the_logger_sends():
    headers, _ = logger_event({"predictions": [1]})
    assert {"ce-id", "ce-type", "ce-source", "ce-specversion", "ce-time", "ce-inferenceservicename",
            "ce-namespace", "ce-component", "ce-endpoint"} <= set(headers)


def test_v1_batch_is_one_prediction_per_row_with_row_ids():
    headers, body = logger_event({"predictions": [[0.1, 0.9], [0.7, 0.3], 1]})
    event = spool_lines(headers, body, None, "m", T0)
    assert event.reason is None
    assert rows(event) == [
        {"ts": "2026-09-21T14:15:00Z", "id": "7f2c-1#0", "probs": [0.1, 0.9]},
        {"ts": "2026-09-21T14:15:00Z", "id": "7f2c-1#1", "probs": [0.7, 0.3]},
        {"ts": "2026-09-21T14:15:00Z", "id": "7f2c-1#2", "prediction": 1}]


def test_a_single_row_keeps_the_event_id_and_no_time_means_arrival():
    headers, body = logger_event({"predictions": [[0.1, 0.9]]}, time=None)
    assert rows(spool_lines(headers, body, None, "m", T0)) == [
        {"ts": T0, "id": "7f2c-1", "probs": [0.1, 0.9]}]


def test_without_a_model_each_row_names_the_inference_service():
    headers, body = logger_event({"predictions": [0]})
    assert rows(spool_lines(headers, body, None, None, T0))[0]["model"] == "fraud"


def test_v2_flattened_2d_float_tensor_is_probabilities():
    body = {"model_name": "fraud", "id": "r1", "outputs": [
        {"name": "label", "shape": [2], "datatype": "INT64", "data": [1, 0]},
        {"name": "probabilities", "shape": [2, 3], "datatype": "FP32",
         "data": [0.1, 0.2, 0.7, 0.5, 0.25, 0.25]}]}
    headers, data = logger_event(body)
    assert [r["probs"] for r in rows(spool_lines(headers, data, "probabilities", "m", T0))] == [
        [0.1, 0.2, 0.7], [0.5, 0.25, 0.25]]
    # Nested data (row-major) is the same tensor.
    body["outputs"][1]["data"] = [[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]]
    headers, data = logger_event(body)
    assert [r["probs"] for r in rows(spool_lines(headers, data, "probabilities", "m", T0))] == [
        [0.1, 0.2, 0.7], [0.5, 0.25, 0.25]]


def test_v2_1d_tensor_is_hard_predictions_and_the_first_output_is_the_default():
    body = {"model_name": "fraud", "outputs": [
        {"name": "label", "shape": [3], "datatype": "BYTES", "data": ["legit", "fraud", "legit"]},
        {"name": "probabilities", "shape": [3, 2], "datatype": "FP32", "data": [0.5] * 6}]}
    headers, data = logger_event(body)
    assert [r["prediction"] for r in rows(spool_lines(headers, data, None, "m", T0))] == [
        "legit", "fraud", "legit"]


def test_request_events_are_answered_and_spool_nothing():
    headers, body = logger_event({"instances": [[1.0, 2.0]]}, kind=REQUEST)
    event = spool_lines(headers, body, None, "m", T0)
    assert (event.lines, event.reason) == (b"", None)


@pytest.mark.parametrize(("body", "reason"), [
    (b"{not json", Reason.NOT_JSON),
    (b"\xff\xfe", Reason.NOT_UTF8),
    ([1, 2], Reason.NOT_OBJECT),
    ({"instances": [[1.0]]}, Reason.MISSING_FIELD),
    ({"outputs": []}, Reason.MISSING_FIELD),
    ({"outputs": [{"name": "p", "shape": [2, 2], "datatype": "FP32", "data": [0.5, 0.5, 1.0]}]},
     Reason.WRONG_LENGTH),
    ({"outputs": [{"name": "p", "shape": [1, 1, 2], "datatype": "FP32", "data": [0.5, 0.5]}]},
     Reason.WRONG_LENGTH),
    ({"outputs": [{"name": "p", "datatype": "FP32", "data": [0.5, 0.5]}]}, Reason.MISSING_FIELD),
])
def test_a_body_that_is_not_predictions_is_one_refusal_line(body, reason):
    headers, data = logger_event(body)
    event = spool_lines(headers, data, None, "m", T0)
    assert event.reason is reason
    assert rows(event) == [{"rejected": reason.value}]


def test_a_named_output_that_is_absent_is_refused():
    headers, data = logger_event({"outputs": [{"name": "p", "shape": [1], "datatype": "INT64",
                                               "data": [1]}]})
    assert spool_lines(headers, data, "probabilities", "m", T0).reason is Reason.MISSING_FIELD


def test_an_event_without_ce_id_is_refused():
    headers, data = logger_event({"predictions": [1]})
    del headers["ce-id"]
    assert spool_lines(headers, data, None, "m", T0).reason is Reason.MISSING_FIELD


def test_spooled_rows_count_as_the_same_jsonl_lines_and_bad_rows_are_rejected_alone():
    spool = yaml.safe_load("""
        http_sources: [{name: kserve, path: /kserve/m, format: kserve, model: m}]
        state_dir: /var/lib/dm
        models: {m: {classes: [legit, fraud], windows: [5m], min_samples: 1}}""")
    plain = yaml.safe_load("""
        sources: [{name: kserve, path: /x, model: m}]
        models: {m: {classes: [legit, fraud], windows: [5m], min_samples: 1}}""")
    headers, data = logger_event({"predictions": [[0.1, 0.9], [0.6, 0.6], [-0.5, 1.5], "fraud",
                                                  [float("nan"), 1.0]]})
    bad_headers, bad = logger_event(b"{not json", event_id="e2")
    lines = (spool_lines(headers, data, None, "m", T0).lines
             + spool_lines(bad_headers, bad, None, "m", T0).lines).splitlines()
    a = Aggregator(build_config(spool))
    rejects = ingest_predictions(a, a.config.sources[0], lines, T0 + 100)
    assert [(r.index, r.reason) for r in rejects] == [
        (1, Reason.BAD_SUM), (2, Reason.BAD_PROBABILITY), (4, Reason.BAD_PROBABILITY),
        (5, Reason.NOT_JSON)]
    b = Aggregator(build_config(plain))
    ingest_predictions(b, b.config.sources[0], [
        line(ts="2026-09-21T14:15:00Z", id="7f2c-1#0", probs=[0.1, 0.9]),
        line(ts="2026-09-21T14:15:00Z", id="7f2c-1#3", prediction="fraud")], T0 + 100)
    for x, y in zip(a.advance(T0 + 100).snapshot().models, b.advance(T0 + 100).snapshot().models):
        assert_same_snapshot(x, y)
    assert a.advance(T0 + 100).snapshot().sources[0].rejected["not_json"] == 1
