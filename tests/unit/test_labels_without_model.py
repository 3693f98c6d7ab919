"""DESIGN.md "Labels without a model": a label line with no model, from a label source with
no `model`, joins by id alone to whichever model's prediction carries that id; one that
arrives first waits for a prediction of any model; only a never-matched id expires.
Through the Aggregator, with two models of different classes, and across state/restore."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from monitor.core.aggregate import Aggregator
from monitor.shell.config import build_config

from .strategies import FAST, ingest_labels, ingest_predictions, line

CONFIG = build_config({
    "sources": [{"name": "preds", "path": "/logs/p.jsonl"}],
    "labels": [{"name": "feedback", "path": "/logs/l.jsonl", "join_ttl": "1h"}],
    "models": {"fraud": {"classes": ["legit", "fraud"], "windows": ["1h"], "min_samples": 1},
               "churn": {"classes": ["stay", "leave", "unknown"], "windows": ["1h"], "min_samples": 1}},
})
SOURCE, LABELS = CONFIG.sources[0], CONFIG.labels[0]
T = 100_000.0


def prediction(model: str, request_id: str, ts: float = T) -> bytes:
    k = len(CONFIG.models[model].classes)
    return line(model=model, id=request_id, ts=ts, probs=[1.0 / k] * k)


def joins(aggregator: Aggregator, now: float = T) -> dict[str, tuple[int, int, int]]:
    """model -> (joins, pending, expired)."""
    return {j.model: (j.joins, j.pending, j.expired) for j in aggregator.advance(now).snapshot().joins}


def labels_total(aggregator: Aggregator, now: float = T) -> dict[str, list[int]]:
    return {m.name: m.labels_total.tolist() for m in aggregator.advance(now).snapshot().models}


def rejected(aggregator: Aggregator) -> dict[str, int]:
    counts = aggregator.counters["feedback"].rejected
    return {reason: n for reason, n in counts.items() if n}


def test_a_label_without_a_model_joins_the_prediction_of_whichever_model_has_its_id():
    aggregator = Aggregator(CONFIG)
    ingest_predictions(aggregator, SOURCE, [prediction("fraud", "f-1"), prediction("churn", "c-1"),
                                            prediction("churn", "c-2")], now=T)
    ingest_labels(aggregator, LABELS, [line(id="f-1", label="fraud"), line(id="c-1", label=2),
                                       line(id="c-2", label="stay")], now=T)
    assert rejected(aggregator) == {}
    assert joins(aggregator) == {"fraud": (1, 0, 0), "churn": (2, 0, 0)}
    assert labels_total(aggregator) == {"fraud": [0, 1], "churn": [1, 0, 1]}


def test_a_label_that_comes_first_waits_for_a_prediction_of_any_model():
    aggregator = Aggregator(CONFIG)
    # "leave" is a class of churn only; 1 is a class index in both models.
    ingest_labels(aggregator, LABELS, [line(id="c-1", label="leave"), line(id="f-1", label=1)], now=T)
    assert joins(aggregator) == {"fraud": (0, 0, 0), "churn": (0, 0, 0)}
    ingest_predictions(aggregator, SOURCE, [prediction("fraud", "f-1", T + 1),
                                            prediction("churn", "c-1", T + 2)], now=T + 2)
    assert joins(aggregator, T + 2) == {"fraud": (1, 0, 0), "churn": (1, 0, 0)}
    assert labels_total(aggregator, T + 2) == {"fraud": [0, 1], "churn": [0, 1, 0]}
    # Nothing was left waiting to expire later: the copy the other model held is gone.
    assert joins(aggregator, T + 7200) == {"fraud": (1, 0, 0), "churn": (1, 0, 0)}
    assert all(not store.early for store in aggregator.stores.values())


def test_only_a_label_whose_id_is_never_matched_expires():
    aggregator = Aggregator(CONFIG)
    ingest_labels(aggregator, LABELS, [line(id="never", label="leave", ts=T),
                                       line(id="f-1", label=0, ts=T)], now=T)
    ingest_predictions(aggregator, SOURCE, [prediction("fraud", "f-1", T + 10)], now=T + 10)
    ingest_predictions(aggregator, SOURCE, [prediction("fraud", "later", T + 4000)], now=T + 4000)
    fraud, churn = joins(aggregator, T + 4000)["fraud"], joins(aggregator, T + 4000)["churn"]
    assert fraud == (1, 1, 0)
    assert churn == (0, 0, 1)  # "never" named a churn class only: it waited there, and expired


def test_a_label_naming_no_models_class_is_an_unknown_class_and_a_second_label_a_duplicate():
    aggregator = Aggregator(CONFIG)
    ingest_predictions(aggregator, SOURCE, [prediction("fraud", "f-1")], now=T)
    ingest_labels(aggregator, LABELS, [line(id="f-1", label="spam"), line(id="x", label=7),
                                       line(id="f-1", label="leave"), line(id="f-1", label=1),
                                       line(id="f-1", label=0), line(id="e", label=0),
                                       line(id="e", label=1)], now=T)
    # "leave" is no class of fraud, the model whose prediction has the id.
    assert rejected(aggregator) == {"unknown_class": 3}
    assert aggregator.duplicates == {"feedback": 2}  # the second label of f-1 and of e
    assert labels_total(aggregator)["fraud"] == [0, 1]


@FAST
@given(st.lists(st.tuples(st.sampled_from(["fraud", "churn"]), st.integers(0, 30), st.integers(0, 1),
                          st.booleans()), max_size=30), st.integers(0, 30))
def test_joins_by_id_alone_survive_a_restart_at_any_point(events, cut):
    """Each id is predicted by one model and labelled once, before or after; a restart
    (state, restore) at `cut` changes nothing."""
    seen: dict[int, str] = {}
    plan = []
    for model, n, label, label_first in events:
        if n in seen:
            continue
        seen[n] = model
        pair = [("l", model, f"r{n}", label), ("p", model, f"r{n}", label)]
        plan += pair[::-1] if not label_first else pair

    def run(restart_at: int | None) -> Aggregator:
        aggregator = Aggregator(CONFIG)
        for step, (kind, model, request_id, label) in enumerate(plan):
            if step == restart_at:
                meta, arrays = aggregator.state()
                aggregator = Aggregator(CONFIG)
                aggregator.restore(meta, {k: np.array(v) for k, v in arrays.items()})
            if kind == "p":
                ingest_predictions(aggregator, SOURCE, [prediction(model, request_id)], now=T)
            else:
                ingest_labels(aggregator, LABELS, [line(id=request_id, label=label)], now=T)
        return aggregator

    whole, restarted = run(None), run(cut)
    assert joins(whole) == joins(restarted)
    assert labels_total(whole) == labels_total(restarted)
    assert joins(whole) == {m: (sum(1 for x in seen.values() if x == m), 0, 0) for m in ("fraud", "churn")}
