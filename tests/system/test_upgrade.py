"""Upgrading from v0.1: the daemon of this version started on a state_dir the v0.1
daemon left (tests/fixtures/v0.1, written by the real v0.1 daemon: see generate.py
there) continues every counter and offset, so no line is counted twice or lost."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

from pytest import approx

from tests.system.conftest import DaemonProcess, append, value

FIXTURE = Path(__file__).parent.parent / "fixtures" / "v0.1"
EPSILON = 1e-12  # the models' default
# What the v0.1 daemon had counted when it stopped (its /metrics, see generate.py).
FRAUD = {"model": "fraud"}
V01 = [("model_drift_predictions_total", FRAUD, 300),
       ("model_drift_labels_total", {**FRAUD, "class": "legit"}, 110),
       ("model_drift_labels_total", {**FRAUD, "class": "fraud"}, 100),
       ("drift_monitor_label_joins_total", FRAUD, 180),
       ("drift_monitor_label_duplicates_total", {"source": "feedback"}, 1),
       ("drift_monitor_lines_total", {"source": "preds", "status": "late"}, 300),
       ("drift_monitor_lines_total", {"source": "preds", "status": "rejected"}, 1),
       ("drift_monitor_rejected_lines_total", {"source": "preds", "reason": "not_json"}, 1),
       ("drift_monitor_lines_total", {"source": "feedback", "status": "ok"}, 186)]


def v01_config(folder: Path) -> dict:
    """The fixture's config (generate.py), on the copied logs."""
    return {"sources": [{"name": "preds", "path": str(folder / "pred.jsonl"), "model": "fraud"}],
            "labels": [{"name": "feedback", "path": str(folder / "labels.jsonl"),
                        "model": "fraud", "join_ttl": "3650d"}],
            "models": {"fraud": {"classes": ["legit", "fraud"],
                                 "windows": ["5m", {"count": 100}], "min_samples": 1}}}


def predictions(ids: range, ts: float) -> list[dict]:
    return [{"ts": ts + 0.01 * (i - ids.start), "id": f"r-{i}",
             "probs": [round(0.1 + (i % 7) / 10, 2), round(0.9 - (i % 7) / 10, 2)]}
            for i in ids]


def test_a_v01_checkpoint_resumes_its_offsets_counters_and_pending_labels(tmp_path):
    """The v0.1 logs (300 predictions read) grow by 50 predictions, 5 of them with labels
    v0.1 kept waiting early, and labels for the 90 predictions v0.1 kept waiting: the
    upgraded daemon counts each of these lines once, on top of v0.1's counters."""
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("pred.jsonl", "labels.jsonl"):
        # New inodes: the files are recognised by their first bytes, as copies.
        shutil.copyfile(FIXTURE / name, logs / name)
    (tmp_path / "state").mkdir(mode=0o700)
    shutil.copyfile(FIXTURE / "checkpoint.npz", tmp_path / "state" / "checkpoint.npz")
    new = predictions(range(300, 350), time.time())
    append(logs / "pred.jsonl", new)
    pending = [i for i in range(200, 300) if i % 10]
    append(logs / "labels.jsonl", [{"id": f"r-{i}", "label": i % 2} for i in pending])

    d = DaemonProcess(tmp_path, v01_config(logs)).start()
    try:
        # From the first scrape on, never below what v0.1 exported: no counter reset.
        first = d.scrape()
        for name, labels, v01 in V01:
            got = value(first, name, **labels)
            assert got is not None and got >= v01, (name, labels, got)
        d.wait_value("drift_monitor_label_joins_total", 180 + 90 + 5, timeout_s=30, model="fraud")
        d.wait_value("model_drift_predictions_total", 300 + 50, timeout_s=30, model="fraud")
        assert d.value("drift_monitor_pending_labels", model="fraud") == 45  # r-305..r-349
        legit, fraud = ({"model": "fraud", "class": c} for c in ("legit", "fraud"))
        assert d.value("model_drift_labels_total", **legit) == 110 + 40 + 3
        assert d.value("model_drift_labels_total", **fraud) == 100 + 50 + 2
        assert d.value("drift_monitor_label_duplicates_total", source="feedback") == 1
        assert d.value("drift_monitor_lines_total", source="feedback", status="ok") == 276
        assert d.value("drift_monitor_lines_total", source="preds", status="ok") == 50
        assert d.value("drift_monitor_lines_total", source="preds", status="late") == 300
        assert d.value("drift_monitor_rejected_lines_total", reason="not_json", source="preds") == 1
        # probability_total over every line of the log, each once.
        lines = [json.loads(line) for line in (logs / "pred.jsonl").read_text().splitlines()
                 if line.startswith("{\"")]
        assert len(lines) == 350
        for k, cls in enumerate(("legit", "fraud")):
            assert d.value("model_drift_probability_total", model="fraud",
                           **{"class": cls}) == approx(
                sum(doc["probs"][k] for doc in lines), rel=1e-12)
        # log_loss_sum_total (new in v0.2) from 0: the 95 labels joined since the upgrade.
        probs = {doc["id"]: doc["probs"] for doc in lines}
        joined = [*pending, *range(300, 305)]
        loss = sum(-math.log(max(probs[f"r-{i}"][i % 2], EPSILON)) for i in joined)
        assert d.value("model_drift_log_loss_sum_total", model="fraud") == approx(loss, rel=1e-12)
        # Windows start empty: only what was read since the upgrade, no v0.1 row, no
        # unfilled row of the count window counted as a prediction.
        for window in ("5m", "count:100"):
            assert d.value("model_drift_window_predictions", model="fraud", window=window) == 50
        state = tmp_path / "state"
        assert not list(state.glob("*.corrupt-*"))
        assert d.log().count("checkpoint of v0.1 upgraded") == 1
        assert "started empty (v0.1 sums lack columns of this version): fraud: reference, " \
               "window.5m, window.count:100" in d.log()
        before = {key: v for key, v in d.scrape().items()
                  if key[0].startswith(("model_drift_", "drift_monitor_label",
                                        "drift_monitor_pending", "drift_monitor_lines"))}
        assert d.stop() == 0
        # The upgraded state is written in this version's format and restores as it is.
        d.start()
        after = {key: v for key, v in d.scrape().items() if key in before}
        assert after == before
        assert d.log().count("checkpoint of v0.1 upgraded") == 1
        assert d.stop() == 0
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.kill()
