"""SageMaker Data Capture files in their documented layout (hourly folders
`<endpoint>/<variant>/yyyy/mm/dd/hh/*.jsonl`), every encoding, and Model Monitor
ground truth joined by inferenceId or eventId: the daemon counts them as it counts the
same predictions written as plain JSON Lines (replay, every value to 1e-12)."""

from __future__ import annotations

import base64
import json
import random
import time
from datetime import datetime, timezone
from pathlib import Path

from tests.system.conftest import append, model_config
from tests.system.test_bentoml import assert_same_replay

T0 = (time.time() // 3600 - 3) * 3600  # on the hour, recent enough for join_ttl


def output(p: list[float], rng: random.Random) -> dict:
    kind = rng.choice(["JSON", "CSV", "BASE64-JSON", "BASE64-CSV"])
    csv = ",".join(repr(x) for x in p)
    text = json.dumps(p) if kind.endswith("JSON") else csv
    content = "application/json" if kind.endswith("JSON") else "text/csv"
    data = base64.b64encode(text.encode()).decode() if kind.startswith("BASE64") else text
    return {"observedContentType": content, "mode": "OUTPUT", "data": data,
            "encoding": kind.split("-")[0]}


def test_capture_and_ground_truth_count_as_the_same_jsonl(daemon_factory, tmp_path: Path):
    rng = random.Random(8)
    capture, truth = tmp_path / "capture" / "fraud-ep" / "AllTraffic", tmp_path / "truth"
    native, native_labels = tmp_path / "native.jsonl", tmp_path / "native-labels.jsonl"
    for i in range(400):
        ts = T0 + i * 20  # spans 2+ hours: three hourly folders
        when = datetime.fromtimestamp(ts, timezone.utc)
        p0 = rng.random()
        p = [p0, 1.0 - p0]
        meta = {"eventId": f"ev-{i}", "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        if i % 3:
            meta["inferenceId"] = f"inf-{i}"
        folder = capture / when.strftime("%Y/%m/%d/%H")
        folder.mkdir(parents=True, exist_ok=True)
        append(folder / "capture.jsonl", [{"captureData": {
            "endpointInput": {"observedContentType": "text/csv", "mode": "INPUT",
                              "data": "1,2,3", "encoding": "CSV"},
            "endpointOutput": output(p, rng)}, "eventMetadata": meta, "eventVersion": "0"}])
        rid = meta.get("inferenceId", meta["eventId"])
        append(native, [{"ts": ts, "id": rid, "probs": p}])
        if i % 5:  # ground truth for most, class name or index, in hourly label files
            label = rng.randint(0, 1)
            gt = {"data": ["legit", "fraud"][label] if i % 2 else str(label), "encoding": "CSV"}
            truth.mkdir(exist_ok=True)
            append(truth / f"{when:%H}.jsonl", [{"groundTruthData": gt, "eventMetadata":
                                                 {"eventId": rid}, "eventVersion": "0"}])
            append(native_labels, [{"id": rid, "label": label}])
    models = {"fraud": model_config(windows=["1h", {"count": 100}])}
    sagemaker = {"state_dir": str(tmp_path / "unused"), "models": models,
                 "sources": [{"name": "capture", "path": str(capture / "*/*/*/*/*.jsonl"),
                              "format": "sagemaker", "model": "fraud"}],
                 "labels": [{"name": "truth", "path": str(truth / "*.jsonl"),
                             "format": "sagemaker", "model": "fraud"}]}
    plain = {**sagemaker, "sources": [{"name": "capture", "path": str(native), "model": "fraud"}],
             "labels": [{"name": "truth", "path": str(native_labels), "model": "fraud"}]}
    assert_same_replay(tmp_path, sagemaker, plain)

    # And the daemon itself, on the same files.
    d = daemon_factory(sagemaker | {"state_dir": str(tmp_path / "state")})
    d.start()
    d.wait_value("model_drift_predictions_total", 400, timeout_s=20, model="fraud")
    d.wait_value("drift_monitor_label_joins_total", 320, timeout_s=20, model="fraud")
    assert d.value("drift_monitor_lines_total", source="capture", status="rejected") == 0
    assert d.stop() == 0
