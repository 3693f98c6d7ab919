"""`init`'s inference: fields, models and classes from sample lines, and a config that
validates. Pure: lines in, text out."""

from __future__ import annotations

import json
import random

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from monitor.shell.config import build_config
from monitor.shell.starter import infer


def lines(docs: list[dict]) -> list[bytes]:
    return [json.dumps(d).encode() for d in docs]


def starter_config(docs: list[dict]) -> dict:
    text = infer(lines(docs), "/logs/fraud-*.jsonl", 1).text
    build_config(yaml.safe_load(text), "/tmp")  # raises if the config is not valid
    return yaml.safe_load(text)


def test_default_field_names_need_no_fields_mapping_and_list_length_gives_the_classes():
    config = starter_config([{"ts": 1.7e9, "probs": [0.2, 0.3, 0.5], "label": 2, "id": "r-1"}] * 5)
    (source,) = config["sources"]
    assert "fields" not in source
    assert source == {"name": "fraud", "path": "/logs/fraud-*.jsonl", "model": "fraud"}
    assert config["models"]["fraud"]["classes"] == ["0", "1", "2"]


def test_probs_object_keys_are_the_classes_in_first_seen_order():
    docs = [{"probs": {"legit": 0.9, "fraud": 0.1}},
            {"probs": {"fraud": 0.5, "legit": 0.5, "review": 0.0}, "label": "legit"}]
    assert starter_config(docs)["models"]["fraud"]["classes"] == ["legit", "fraud", "review"]


def test_nested_and_renamed_fields_are_found_with_dotted_paths():
    docs = [{"timestamp": "2026-11-24T10:00:00Z", "model_name": "churn", "request_id": 7,
             "response": {"scores": [0.4, 0.6]}, "target": 1}] * 3
    config = starter_config(docs)
    assert config["sources"][0]["fields"] == {
        "probabilities": "response.scores", "label": "target", "timestamp": "timestamp",
        "model": "model_name", "id": "request_id"}
    assert "model" not in config["sources"][0]
    assert set(config["models"]) == {"churn"}


def test_each_model_gets_its_own_classes():
    docs = [{"model": "a", "probs": [0.5, 0.5]}, {"model": "b", "probs": [0.2, 0.2, 0.6]}]
    models = starter_config(docs)["models"]
    assert models["a"]["classes"] == ["0", "1"] and models["b"]["classes"] == ["0", "1", "2"]


def test_hard_predictions_give_their_class_names():
    docs = [{"prediction": "cat", "label": "dog"}, {"prediction": "bird", "label": None}]
    config = starter_config(docs)
    assert config["models"]["fraud"]["classes"] == ["bird", "cat", "dog"]
    assert "fields" not in config["sources"][0]


def test_string_labels_with_probs_lists_are_flagged_for_the_user_to_order():
    docs = [{"probs": [0.3, 0.7], "label": "yes"}, {"probs": [0.6, 0.4], "label": "no"}]
    starter = infer(lines(docs), "/l/*.jsonl", 1)
    assert yaml.safe_load(starter.text)["models"]["predictions"]["classes"] == ["no", "yes"]
    assert any("reorder" in note for note in starter.notes)
    assert "# CHECK: models.predictions: classes are sorted by name" in starter.text


def test_one_class_seen_still_gives_a_valid_config_and_says_so():
    starter = infer(lines([{"prediction": 0}] * 4), "/l/p.jsonl", 1)
    build_config(yaml.safe_load(starter.text), "/tmp")
    assert any("one class only" in note for note in starter.notes)


def test_a_label_log_or_garbage_is_refused_saying_what_was_looked_for():
    with pytest.raises(ValueError, match="is it a label log"):
        infer([*lines([{"id": "r-1", "label": 1}]), b"not json", b"\xff"], "/l/*.jsonl", 1)


def test_logits_that_do_not_sum_to_one_are_not_taken_for_probabilities():
    with pytest.raises(ValueError):
        infer(lines([{"probs": [2.5, -1.0, 3.0]}] * 3), "/l/*.jsonl", 1)


names = st.lists(st.text("abcdefghij", min_size=1, max_size=6), min_size=2, max_size=6,
                 unique=True)


@given(names, st.sampled_from(["probs", "scores", "output.probabilities"]),
       st.sampled_from(["label", "target", "y_true"]), st.integers(0, 2**32))
def test_generated_logs_give_back_their_classes_and_fields(classes, probs_path, label_field, seed):
    rng = random.Random(seed)
    docs = []
    for i in range(40):
        weights = [rng.random() + 1e-3 for _ in classes]
        total = sum(weights)
        probs = dict(zip(classes, (w / total for w in weights)))
        doc: dict = {"ts": 1.7e9 + i, label_field: rng.choice(classes)}
        parent, _, leaf = probs_path.rpartition(".")
        (doc.setdefault(parent, {}) if parent else doc)[leaf] = probs
        docs.append(doc)
    config = starter_config(docs)
    seen = list(dict.fromkeys(c for d in docs for c in (d.get("output") or d)
                              [probs_path.rpartition(".")[2]]))
    assert config["models"]["fraud"]["classes"] == seen
    fields = config["sources"][0].get("fields", {})
    assert fields.get("probabilities", "probs") == probs_path
    assert fields.get("label", "label") == label_field
