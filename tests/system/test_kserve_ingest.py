"""HTTP ingest for the KServe payload logger, against the real daemon: events built with
the CloudEvents SDK in binary mode, POSTed over loopback. An event answered 200 is
counted exactly once, even across kill -9; one refused (connection refused, 503) never;
a full spool answers 503 with Retry-After at once; bad bodies 400, counted."""

from __future__ import annotations

import http.client
import json
import random
import signal
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent

from tests.system.conftest import model_config, wait_until

PATH = "/kserve/fraud"


def config(**http: object) -> dict:
    return {"sources": [], "checkpoint_interval": "200ms",
            "http_sources": [{"name": "kserve", "path": PATH, "format": "kserve", "model": "fraud",
                              **http}],
            "models": {"fraud": model_config()}}


def event(event_id: str, body: dict | bytes, kind: str = "response") -> tuple[dict[str, str], bytes]:
    """What KServe's logger (pkg/logger/worker.go) POSTs: binary mode, its extensions."""
    message = to_binary_event(CloudEvent({
        "id": event_id, "type": f"org.kubeflow.serving.inference.{kind}",
        "source": "http://localhost:9081/", "specversion": "1.0",
        "time": datetime.now(timezone.utc), "datacontenttype": "application/json",
        "inferenceservicename": "fraud", "namespace": "default", "component": "predictor",
        "endpoint": "default", "metadata": "{}"},
        body if isinstance(body, bytes) else json.dumps(body).encode()))
    return dict(message.headers), message.body


def post(port: int, headers: dict[str, str], body: bytes,
         path: str = PATH) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def v2(rows: list[int]) -> dict:
    """An Open Inference Protocol response: [n, 2] probabilities, flattened row-major."""
    data = [x for label in rows for x in ((0.0, 1.0) if label else (1.0, 0.0))]
    return {"model_name": "fraud", "id": "x", "outputs": [
        {"name": "probabilities", "shape": [len(rows), 2], "datatype": "FP32", "data": data}]}


class Sender:
    """Threads POSTing response events of 1 to 3 rows; per event, what its POST saw."""

    def __init__(self, port_of, threads: int = 2) -> None:
        self.port_of = port_of
        self.answered = [0, 0]  # rows per class in events answered 200
        self.unknown = [0, 0]  # rows in events cut mid-request (may or may not count)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(t,)) for t in range(threads)]

    def run(self, t: int) -> None:
        rng = random.Random(t)
        n = 0
        while not self.stop.is_set():
            rows = [rng.randint(0, 1) for _ in range(rng.randint(1, 3))]
            headers, body = event(f"ev-{t}-{n}", v2(rows))
            n += 1
            try:
                status, _, _ = post(self.port_of(), headers, body)
            except ConnectionRefusedError:
                time.sleep(0.02)  # daemon down: never spooled
                continue
            except (OSError, http.client.HTTPException):
                status = None  # the daemon died while answering: sent, maybe spooled
            with self.lock:
                tally = self.answered if status == 200 else self.unknown if status is None else None
                if tally is not None:
                    for label in rows:
                        tally[label] += 1

    def __enter__(self) -> Sender:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=20)


def counted(d) -> list[float]:
    """Rows counted per class: the rows are one-hot, so their probability sums."""
    samples = d.scrape()
    return [samples.get(("model_drift_probability_total",
                         frozenset({"model": "fraud", "class": c}.items())), 0.0)
            for c in ("legit", "fraud")]


@pytest.mark.slow
def test_events_answered_200_are_counted_exactly_once_across_kill_9(daemon_factory):
    rng = random.Random(5)
    d = daemon_factory(config())
    d.start()
    with Sender(lambda: d.port) as sender:
        for _ in range(4):
            time.sleep(rng.uniform(0.5, 1.5))
            d.kill()
            time.sleep(0.2)  # posts now meet a refused connection
            d.start()
        time.sleep(0.5)
    answered, unknown = sender.answered, sender.unknown
    assert sum(answered) > 50
    try:
        wait_until(lambda: all(g >= a for g, a in zip(counted(d), answered)), 30)
    except AssertionError:
        raise AssertionError(f"counted {counted(d)} < answered {answered}\n{d.log()[-3000:]}") from None
    got = counted(d)
    # Only events whose POST was cut by the kill (sent, no answer) may count beyond these.
    assert all(a <= g <= a + u for g, a, u in zip(got, answered, unknown)), (got, answered, unknown)
    assert d.value("model_drift_predictions_total", model="fraud") == sum(got)
    assert d.stop() == 0


def test_full_spool_answers_503_with_retry_after_and_takes_events_again_once_read(daemon_factory):
    # No checkpoint after start-up: nothing read is released, so the spool fills.
    d = daemon_factory({**config(max_spool_bytes=4096), "checkpoint_interval": "1h"})
    d.start()
    accepted = 0
    for i in range(200):
        status, headers, _ = post(d.port, *event(f"e{i}", {"predictions": [[0.3, 0.7]]}))
        if status == 503:
            assert headers.get("Retry-After") == "3600"
            break
        assert status == 200
        accepted += 1
    else:
        raise AssertionError("the spool never filled")
    assert 5 < accepted < 200
    assert d.stop() == 0
    d.config["checkpoint_interval"] = "200ms"
    d.write_config(d.config)
    d.start()
    d.wait_value("model_drift_predictions_total", accepted, timeout_s=20, model="fraud")
    # Read and checkpointed, the old segments are deleted and events are taken again.
    wait_until(lambda: post(d.port, *event("again", {"predictions": [[0.3, 0.7]]}))[0] == 200, 20)
    d.wait_value("model_drift_predictions_total", accepted + 1, timeout_s=20, model="fraud")
    assert d.stop() == 0


def test_bad_bodies_400_counted_as_rejected_request_events_200_not_counted(daemon_factory):
    d = daemon_factory(config())
    d.start()
    status, _, body = post(d.port, *event("bad", b"{not json"))
    assert (status, json.loads(body)) == (400, {"status": "not predictions: not_json"})
    status, _, _ = post(d.port, *event("r1", {"instances": [[1.0, 2.0]]}, kind="request"))
    assert status == 200
    status, _, _ = post(d.port, *event("r1", {"predictions": [[0.1, 0.9], [0.2, 0.5]]}))
    assert status == 200  # its second row fails the sum check: rejected alone
    d.wait_value("drift_monitor_rejected_lines_total", 1, source="kserve", reason="not_json")
    d.wait_value("drift_monitor_rejected_lines_total", 1, source="kserve", reason="bad_sum")
    assert d.value("model_drift_predictions_total", model="fraud") == 1
    assert d.value("drift_monitor_lines_total", source="kserve", status="ok") == 1
    assert post(d.port, {"Content-Type": "text/plain"}, b"x", path="/metrics")[0] == 405
    # Any method but GET/HEAD off an ingest route is refused alike (405), whatever the path.
    assert post(d.port, {"Content-Type": "text/plain"}, b"x", path="/nowhere")[0] == 405
    assert d.stop() == 0


def test_spool_files_are_private_and_deleted_once_read(daemon_factory, tmp_path: Path):
    d = daemon_factory(config(max_spool_bytes=4096))
    d.start()
    for i in range(60):  # ~10 segments of 512 bytes
        assert post(d.port, *event(f"e{i}", {"predictions": [[0.3, 0.7]]}))[0] == 200
    d.wait_value("model_drift_predictions_total", 60, timeout_s=20, model="fraud")
    folder = tmp_path / "state" / "spool" / "kserve"
    wait_until(lambda: len(list(folder.iterdir())) == 1, 20)
    (segment,) = folder.iterdir()
    assert segment.stat().st_mode & 0o777 == 0o600
    assert folder.stat().st_mode & 0o777 == 0o700
    assert d.stop() == 0


def test_the_same_event_posted_twice_first_in_two_segments_counts_twice(daemon_factory):
    # Segments of 512 bytes and events of ~400: each event starts a segment. The tailer
    # tells files apart by their first bytes, so each segment starts with its own header.
    d = daemon_factory(config(max_spool_bytes=4096))
    d.start()
    headers, body = event("dup", {"predictions": [[0.25, 0.75]] * 4})
    for _ in range(3):
        assert post(d.port, headers, body)[0] == 200
    d.wait_value("model_drift_predictions_total", 12, timeout_s=20, model="fraud")
    assert d.stop() == 0


def test_sighup_keeps_ingest_and_a_changed_http_source_waits_for_a_restart(daemon_factory):
    d = daemon_factory(config())
    d.start()
    assert post(d.port, *event("a", {"predictions": [[0.3, 0.7]]}))[0] == 200
    d.wait_value("model_drift_predictions_total", 1, model="fraud")
    d.config["http_sources"] = [{**d.config["http_sources"][0], "path": "/kserve/elsewhere"}]
    d.write_config(d.config)
    d.send(signal.SIGHUP)
    wait_until(lambda: "http_sources changes need a restart" in d.log(), 10)
    assert post(d.port, *event("b", {"predictions": [[0.3, 0.7]]}))[0] == 200
    # Not a route until a restart:
    assert post(d.port, *event("c", {"predictions": [[0.3, 0.7]]}), path="/kserve/elsewhere")[0] == 405
    d.wait_value("model_drift_predictions_total", 2, model="fraud")
    assert d.stop() == 0
    d.start()  # the new path now, and the old spool still read exactly once
    assert post(d.port, *event("d", {"predictions": [[0.3, 0.7]]}), path="/kserve/elsewhere")[0] == 200
    d.wait_value("model_drift_predictions_total", 3, model="fraud")
    assert d.stop() == 0
