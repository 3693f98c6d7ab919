"""aggregate.py: snapshot values against an independent numpy/scipy computation; model
admission; state/restore and reconfigure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st
from pytest import approx

from monitor.core.aggregate import Aggregator, Models, ModelState
from monitor.core.parse import MAX_TS, Reason
from monitor.core.settings import ReferenceSpec
from monitor.shell import checkpoint
from monitor.shell.config import build_config

from .strategies import (
    EPS,
    SLOW,
    assert_same_snapshot,
    count_window,
    distributions,
    in_time_window,
    ingest_labels,
    ingest_predictions,
    line,
    model_config,
    predictions,
    time_window,
)

K = 3
PRIOR = (0.5, 0.3, 0.2)

batches = st.lists(st.lists(
    st.tuples(st.floats(-400.0, 100.0), distributions(K), st.integers(-1, K - 1)),
    min_size=1, max_size=15), min_size=1, max_size=5)


LABEL_METRICS = ("log_loss", "label_kl", "brier", "accuracy", "ece")
PREDICTION_METRICS = ("kl", "ce", "js", "pred_kl")


def expected_label_metrics(a, labelled, smoothing, epsilon):
    """DESIGN.md's window-label values from raw (probs, label) pairs, with numpy/scipy."""
    probs = np.array([p for p, _ in labelled])
    y = np.array([label for _, label in labelled])
    k = len(a)
    counts = np.bincount(y, minlength=k) + smoothing
    a_ref = np.maximum(a, epsilon) / np.maximum(a, epsilon).sum()
    onehot = np.eye(k)[y]
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y  # numpy's argmax: the first maximum
    bins = np.minimum(np.floor(confidence * 10), 9)
    ece = sum(np.mean(bins == b) * abs(correct[bins == b].mean() - confidence[bins == b].mean())
              for b in range(10) if (bins == b).any())
    return {
        "log_loss": np.mean(-np.log(np.maximum(probs[np.arange(len(y)), y], epsilon))),
        "label_kl": scipy.stats.entropy(counts / counts.sum(), a_ref) if np.isfinite(a).all()
        else math.nan,
        "brier": np.mean(((probs - onehot) ** 2).sum(axis=1)),
        "accuracy": np.mean(correct),
        "ece": ece,
    }


def expected_metrics(a, window_events, reference_events, min_samples, epsilon, smoothing=0.0):
    """DESIGN.md's definitions, computed here with numpy and scipy from raw events."""
    n = len(window_events)
    labelled = [(p, label) for _, p, label in window_events if label >= 0]
    out = {"predictions": n, "labels": len(labelled)}
    if len(labelled) < max(min_samples, 1):
        out |= dict.fromkeys(LABEL_METRICS, math.nan)
    else:
        out |= expected_label_metrics(a, labelled, smoothing, epsilon)
    if n < max(min_samples, 1):
        return out | dict.fromkeys(PREDICTION_METRICS, math.nan)
    b = np.mean([p for _, p, _ in window_events], axis=0)
    b = np.maximum(b, epsilon)
    b = b / b.sum()
    b_ref = np.mean([p for _, p, _ in reference_events], axis=0)
    out["kl"] = scipy.stats.entropy(a, b)
    out["ce"] = -sum(ai * math.log(bi) for ai, bi in zip(a, b) if ai > 0) if np.isfinite(a).all() \
        else math.nan
    out["js"] = scipy.spatial.distance.jensenshannon(a, b) ** 2 if np.isfinite(a).all() else math.nan
    out["pred_kl"] = scipy.stats.entropy(b_ref, b)
    return out


def same(x: float, y: float) -> bool:
    return (math.isnan(x) and math.isnan(y)) or x == approx(y, rel=1e-9, abs=1e-9)


@SLOW
@given(batches, st.integers(0, 12), st.sampled_from([0.0, 0.5, 1.0]), st.booleans(),
       st.integers(1, 9), st.floats(0.0, 200.0))
def test_snapshot_equals_an_independent_numpy_computation(batches_, min_samples, smoothing, static,
                                                          count, idle):
    reference = ReferenceSpec("static", prior=PRIOR) if static else ReferenceSpec("cumulative")
    config = model_config(windows=(time_window(60.0), time_window(300.0), count_window(count)),
                          reference=reference, min_samples=min_samples, smoothing=smoothing)
    model = ModelState("m", config)
    wall, clock, seen = 1_000_000.0, -math.inf, []
    for batch in batches_:
        start = max(clock, wall)
        events_ = [(start + offset, p, label) for offset, p, label in batch]
        model.ingest(predictions(*zip(*events_)), wall)
        clock = max(start, *(e[0] for e in events_))
        seen += events_
        wall += 30.0
    now = max(clock, wall) + idle
    snapshot = model.advance(now).snapshot()

    label_counts = np.bincount([label for _, _, label in seen if label >= 0], minlength=K)
    if static:
        a = np.array(PRIOR)
    elif label_counts.sum() + smoothing == 0:
        a = np.full(K, math.nan)
    else:
        a = (label_counts + smoothing) / (label_counts.sum() + K * smoothing)
    assert same(snapshot.reference_entropy, scipy.stats.entropy(a) if np.isfinite(a).all() else math.nan)
    assert snapshot.reference_labels == label_counts.sum()
    assert snapshot.predictions_total == len(seen)
    assert list(snapshot.labels_total) == list(label_counts)
    assert snapshot.probability_total == approx(np.sum([p for _, p, _ in seen], axis=0))
    assert snapshot.last_event_ts == max(e[0] for e in seen)
    assert snapshot.windows == ("60s", "300s", f"count:{count}")
    losses = [-math.log(max(p[label], EPS)) for _, p, label in seen if label >= 0]
    assert snapshot.log_loss_sum_total == approx(sum(losses), rel=1e-12, abs=1e-12)
    assert same(snapshot.reference_log_loss, np.mean(losses) if losses else math.nan)

    for i, spec in enumerate(config.windows):
        if spec.duration_s is None:
            inside = seen[-count:]
        else:
            inside = [e for e in seen if in_time_window(e[0], now, spec.duration_s)]
        want = expected_metrics(a, inside, seen, min_samples, EPS, smoothing)
        assert snapshot.window_predictions[i] == want["predictions"]
        assert snapshot.window_labels[i] == want["labels"]
        for name, got in (("kl", snapshot.kl_divergence), ("ce", snapshot.cross_entropy),
                          ("js", snapshot.js_divergence),
                          ("pred_kl", snapshot.prediction_kl_divergence),
                          ("log_loss", snapshot.log_loss),
                          ("label_kl", snapshot.label_kl_divergence),
                          ("brier", snapshot.brier_score), ("accuracy", snapshot.accuracy),
                          ("ece", snapshot.expected_calibration_error)):
            assert same(float(got[i]), float(want[name])), (spec.name, name, got[i], want[name])


def test_min_samples_gates_prediction_values_on_predictions_and_label_values_on_labels():
    model = ModelState("m", model_config(windows=(time_window(300.0),), min_samples=3))
    model.ingest(predictions([10.0, 11.0], [[0.2, 0.3, 0.5]] * 2, [0, 2]), now=11.0)
    below = model.advance(11.0).snapshot()
    assert below.window_predictions[0] == 2 and below.window_labels[0] == 2
    prediction_values = ("kl_divergence", "cross_entropy", "js_divergence",
                         "prediction_kl_divergence")
    label_values = ("log_loss", "label_kl_divergence", "brier_score", "accuracy",
                    "expected_calibration_error")
    for name in prediction_values + label_values:
        assert math.isnan(getattr(below, name)[0]), name
    assert below.reference_entropy == approx(math.log(2))  # the reference is not a window
    model.ingest(predictions([12.0], [[0.2, 0.3, 0.5]], [-1]), now=12.0)
    three_predictions = model.advance(12.0).snapshot()
    assert three_predictions.window_predictions[0] == 3
    for name in prediction_values:
        assert math.isfinite(getattr(three_predictions, name)[0]), name
    for name in label_values:  # still 2 labels: v0.1 exported log loss here
        assert math.isnan(getattr(three_predictions, name)[0]), name
    model.ingest(predictions([13.0], [[0.2, 0.3, 0.5]], [1]), now=13.0)
    three_labels = model.advance(13.0).snapshot()
    for name in prediction_values + label_values:
        assert math.isfinite(getattr(three_labels, name)[0]), name


def test_before_any_label_the_label_divergences_are_not_exported():
    """No labels (and no smoothing): A does not exist yet, so KL, cross-entropy, JS and
    S(A) are undefined (NaN, not exported), never 0; prediction KL needs no labels."""
    model = ModelState("m", model_config(windows=(time_window(300.0),), min_samples=1))
    model.ingest(predictions([1.0, 2.0], [[0.2, 0.3, 0.5], [0.5, 0.3, 0.2]], [-1, -1]), now=2.0)
    snapshot = model.advance(2.0).snapshot()
    assert snapshot.window_predictions[0] == 2
    assert snapshot.reference_labels == 0
    for value in (snapshot.kl_divergence[0], snapshot.cross_entropy[0], snapshot.js_divergence[0],
                  snapshot.reference_entropy):
        assert math.isnan(value)
    assert snapshot.prediction_kl_divergence[0] == approx(0.0, abs=1e-12)


def test_worked_example_through_the_model_state():
    model = ModelState("m", model_config(classes=("legit", "fraud"), windows=(time_window(300.0),)))
    labels = [0] + [1] * 9
    model.ingest(predictions([float(i) for i in range(10)], [[0.2, 0.8]] * 10, labels), now=10.0)
    snapshot = model.advance(10.0).snapshot()
    assert snapshot.kl_divergence[0] == approx(0.036690014, abs=5e-10)
    assert snapshot.cross_entropy[0] == approx(snapshot.kl_divergence[0] + snapshot.reference_entropy,
                                               abs=1e-9)


def test_static_prior_is_a_whatever_the_labels():
    config = model_config(windows=(time_window(300.0),), reference=ReferenceSpec("static", prior=PRIOR))
    model = ModelState("m", config)
    model.ingest(predictions([1.0, 2.0], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [0, 0]), now=2.0)
    snapshot = model.advance(2.0).snapshot()
    b = np.maximum([0.5, 0.5, 0.0], EPS)
    b /= b.sum()
    assert snapshot.reference_entropy == approx(scipy.stats.entropy(PRIOR))
    assert snapshot.kl_divergence[0] == approx(scipy.stats.entropy(PRIOR, b))
    assert snapshot.reference_labels == 2  # labels still counted


def config(models: dict, **top) -> object:
    return build_config({"sources": [{"name": "s", "path": "/logs/p.jsonl"}], "models": models, **top})


def test_models_are_admitted_through_the_default_template_up_to_max_models():
    models = Models(config({"fraud": {"classes": ["a", "b"]}, "default": {"classes": ["x", "y", "z"]}},
                           max_models=3))
    assert models.known.classes("fraud") == ("a", "b")
    assert models.known.classes("new1") == ("x", "y", "z")  # looked up, not admitted
    assert [m.name for m in models] == ["fraud"]
    assert models.admit("new1") is None
    assert models.admit("new2") is None
    assert models.admit("new3") is Reason.TOO_MANY_MODELS
    assert models.admit("new1") is None  # admitted ones stay
    assert [m.name for m in models] == ["fraud", "new1", "new2"]
    assert "default" not in [m.name for m in models]


def test_models_without_a_default_template_reject_unknown_names():
    models = Models(config({"fraud": {"classes": ["a", "b"]}}))
    assert models.known.classes("other") is Reason.UNKNOWN_MODEL
    assert models.admit("other") is Reason.UNKNOWN_MODEL
    assert [m.name for m in models] == ["fraud"]


def test_aggregator_counts_unknown_and_too_many_models_by_reason():
    cfg = config({"default": {"classes": ["a", "b"]}}, max_models=1)
    aggregator = Aggregator(cfg)
    ingest_predictions(aggregator, cfg.sources[0], [
        line(model="one", probs=[0.5, 0.5], ts=1.0),
        line(model="two", probs=[0.5, 0.5], ts=1.0),
        line(model="one", probs=[0.5, 0.5], ts=2.0),
    ], now=2.0)
    source = aggregator.advance(2.0).snapshot().sources[0]
    assert source.rejected["too_many_models"] == 1
    assert source.lines == {"ok": 2, "rejected": 1, "late": 0}
    assert [m.name for m in aggregator.advance(2.0).snapshot().models] == ["one"]


def test_admission_is_the_aggregators_and_refuses_beyond_max_models_with_its_reason():
    """The parser only reports new models; the aggregator admits them in order of first
    accepted line and turns a refusal into one too_many_models reject per line."""
    cfg = build_config({"sources": [{"name": "s", "path": "/logs/p.jsonl"}],
                        "labels": [{"name": "l", "path": "/logs/l.jsonl"}],
                        "models": {"default": {"classes": ["a", "b"]}}, "max_models": 2})
    aggregator = Aggregator(cfg)
    assert dict(aggregator.models.known.models) == {}
    rejects = ingest_predictions(aggregator, cfg.sources[0], [
        line(model="two", probs=[0.5, 0.5], ts=1.0, id="x"),
        line(model="one", probs=[0.5, 0.5], ts=1.0),
        line(model="three", probs=[0.5, 0.5], ts=1.0),
        line(model="three", probs=[0.5, 0.5], ts=1.0),
    ], now=1.0)
    assert [(r.index, r.reason, r.detail) for r in rejects] == [
        (2, Reason.TOO_MANY_MODELS, "model 'three'"), (3, Reason.TOO_MANY_MODELS, "model 'three'")]
    assert list(aggregator.models.known.models) == ["two", "one"]
    rejects = ingest_labels(aggregator, cfg.labels[0], [
        line(model="four", id="y", label=1), line(model="two", id="x", label=1)], now=2.0)
    assert [(r.index, r.reason, r.detail) for r in rejects] == [
        (0, Reason.TOO_MANY_MODELS, "model 'four'")]
    snapshot = aggregator.advance(2.0).snapshot()
    assert [m.name for m in snapshot.models] == ["two", "one"]
    assert snapshot.sources[0].rejected["too_many_models"] == 2
    assert snapshot.sources[1].rejected["too_many_models"] == 1
    assert snapshot.sources[1].lines == {"ok": 1, "rejected": 1, "late": 0}


def test_decoders_are_built_with_the_aggregator_one_per_source_that_can_have_one():
    cfg = build_config({"sources": [
        {"name": "plain", "path": "/logs/a.jsonl"},
        {"name": "nested", "path": "/logs/b.jsonl", "model": "m",
         "fields": {"probabilities": "out", "label": "out.label"}}],  # overlapping paths
        "models": {"m": {"classes": ["a", "b"]}, "default": {"classes": ["a", "b"]}}})
    assert list(Aggregator(cfg).decoders) == ["plain"]


def test_a_rejected_line_does_not_admit_its_model():
    """Bad lines never change anything (DESIGN.md): a line rejected for its probabilities
    must not take one of the max_models slots from a later, valid model."""
    cfg = config({"default": {"classes": ["a", "b"]}}, max_models=1)
    aggregator = Aggregator(cfg)
    ingest_predictions(aggregator, cfg.sources[0], [
        line(model="garbage", probs=[0.9, 0.9], ts=1.0),  # bad_sum
        line(model="real", probs=[0.5, 0.5], ts=1.0),
    ], now=1.0)
    snapshot = aggregator.advance(1.0).snapshot()
    assert snapshot.sources[0].rejected["bad_sum"] == 1
    assert [m.name for m in snapshot.models] == ["real"]


LABELLED_CONFIG = {
    "sources": [{"name": "preds", "path": "/logs/p.jsonl"}],
    "labels": [{"name": "feedback", "path": "/logs/l.jsonl", "join_ttl": "1h", "max_pending": 50}],
    "models": {
        "fraud": {"classes": ["legit", "fraud"], "windows": ["1m", "5m", {"count": 4}],
                  "min_samples": 1},
        "spam": {"classes": ["ham", "spam", "eggs"], "windows": ["10m"],
                 "reference": {"decay": "10m"}, "min_samples": 1},
        "default": {"classes": ["x", "y"], "windows": ["1m"], "min_samples": 1},
    },
}


def busy_aggregator(cfg) -> Aggregator:
    aggregator = Aggregator(cfg)
    rng = np.random.default_rng(3)
    for step in range(6):
        lines = []
        for i in range(8):
            model = ["fraud", "spam", "extra"][i % 3]
            k = 3 if model == "spam" else 2
            probs = rng.dirichlet(np.ones(k)).round(6)
            probs[-1] = 1.0 - probs[:-1].sum()
            fields = {"model": model, "probs": probs.tolist(), "ts": 1000.0 + 20 * step + i,
                      "id": f"{model}-{step}-{i}"}
            if i % 4 == 0:
                fields["label"] = int(rng.integers(k))
            lines.append(line(**fields))
        lines.append(b"not json")
        ingest_predictions(aggregator, cfg.sources[0], lines, now=1000.0 + 20 * step)
        labels = [line(id=f"fraud-{step}-{i}", label=i % 2, model="fraud") for i in (3, 6)]
        labels.append(line(id=f"fraud-{step}-3", label=1, model="fraud"))  # a duplicate
        ingest_labels(aggregator, cfg.labels[0], labels, now=1000.0 + 20 * step + 5)
    return aggregator


def test_state_restore_through_a_checkpoint_gives_an_identical_snapshot_and_future():
    cfg = build_config(LABELLED_CONFIG)
    original = busy_aggregator(cfg)
    meta, arrays = original.state()
    restored = Aggregator(cfg)
    assert restored.restore(*checkpoint.decode(checkpoint.encode(meta, arrays))) == []
    assert_same_snapshot(restored.advance(1200.0).snapshot(), original.advance(1200.0).snapshot())
    for aggregator in (original, restored):
        ingest_predictions(aggregator, cfg.sources[0], [
            line(model="fraud", probs=[0.3, 0.7], ts=1210.0, id="late-join"),
            line(model="extra", probs=[0.1, 0.9], ts=1211.0, label="y"),
        ], now=1211.0)
        ingest_labels(aggregator, cfg.labels[0], [line(id="late-join", label="fraud", model="fraud"),
                                                  line(id="fraud-5-6", label=0, model="fraud")],
                      now=1212.0)
    assert_same_snapshot(restored.advance(1300.0).snapshot(), original.advance(1300.0).snapshot())


def test_reconfigure_keeps_models_with_unchanged_classes_and_drops_changed_ones():
    cfg = build_config(LABELLED_CONFIG)
    aggregator = busy_aggregator(cfg)
    before = {m.name: m for m in aggregator.advance(1200.0).snapshot().models}
    changed = dict(LABELLED_CONFIG, models={
        **LABELLED_CONFIG["models"],
        "spam": {"classes": ["ham", "spam"], "windows": ["10m"]},  # classes changed
        "fraud": {**LABELLED_CONFIG["models"]["fraud"], "windows": ["1m", "1h"]},
    })
    fresh, dropped = aggregator.reconfigure(build_config(changed))
    assert dropped == ["spam"]
    after = {m.name: m for m in fresh.advance(1200.0).snapshot().models}
    assert after["spam"].predictions_total == 0
    assert after["fraud"].predictions_total == before["fraud"].predictions_total
    assert list(after["fraud"].labels_total) == list(before["fraud"].labels_total)
    assert after["fraud"].reference_entropy == approx(before["fraud"].reference_entropy)
    assert after["fraud"].window_predictions[0] == before["fraud"].window_predictions[0]  # 1m kept
    assert after["fraud"].window_predictions[1] == 0  # 1h is new: starts empty
    assert after["extra"].predictions_total == before["extra"].predictions_total  # admitted again
    assert fresh.advance(1200.0).snapshot().sources == aggregator.advance(1200.0).snapshot().sources


def test_reconfigure_with_a_new_reference_keeps_counters_and_restarts_the_reference():
    cfg = build_config(LABELLED_CONFIG)
    aggregator = busy_aggregator(cfg)
    before = {m.name: m for m in aggregator.advance(1200.0).snapshot().models}
    changed = dict(LABELLED_CONFIG, models={
        **LABELLED_CONFIG["models"],
        "fraud": {**LABELLED_CONFIG["models"]["fraud"], "reference": {"window": "1h"}}})
    fresh, dropped = aggregator.reconfigure(build_config(changed))
    assert dropped == []
    fraud = next(m for m in fresh.advance(1200.0).snapshot().models if m.name == "fraud")
    assert fraud.predictions_total == before["fraud"].predictions_total
    assert fraud.reference_labels == 0


@pytest.mark.parametrize(("ts", "now", "ok"), [
    (1e20, 100.0, False), (1e300, 100.0, False),
    # At the year-10000 bound itself, with the clock just before it so that the skew
    # check would let it through: only MAX_TS rejects it; a second less is an event.
    (MAX_TS, MAX_TS - 10.0, False), (MAX_TS - 1.0, MAX_TS - 10.0, True),
])
def test_a_timestamp_from_year_10000_on_is_a_bad_timestamp(ts, now, ok):
    cfg = config({"fraud": {"classes": ["a", "b"], "windows": ["5m"], "min_samples": 1}})
    aggregator = Aggregator(cfg)
    ingest_predictions(aggregator, cfg.sources[0], [line(model="fraud", probs=[0.5, 0.5], ts=ts)],
                       now=now)
    snapshot = aggregator.advance(now).snapshot()
    source = snapshot.sources[0]
    if ok:
        assert source.lines["ok"] == 1
        assert snapshot.models[0].window_predictions[0] == 1
    else:
        assert source.lines["rejected"] == 1
        assert source.rejected["bad_timestamp"] == 1


@SLOW
@given(st.lists(st.sampled_from([
    line(model="fraud", probs=[0.5, 0.5], ts=1000.0), line(model="fraud", probs=[0.5, 0.5], ts=10.0),
    line(model="fraud", probs=[0.5, 0.6]), line(model="nope", probs=[1, 0]), b"", b"{",
    line(model="fraud", prediction="b", label="a", ts=999.0),
]), min_size=1, max_size=30))
def test_every_line_is_counted_once_as_ok_rejected_or_late(lines):
    cfg = config({"fraud": {"classes": ["a", "b"], "windows": ["5m", "1h"]}})
    aggregator = Aggregator(cfg)
    ingest_predictions(aggregator, cfg.sources[0], lines, now=1000.0)
    counted = aggregator.advance(1000.0).snapshot().sources[0]
    assert sum(counted.lines.values()) == sum(1 for x in lines if x.strip())
    assert counted.lines["rejected"] == sum(counted.rejected.values())
    assert counted.lines["late"] == lines.count(line(model="fraud", probs=[0.5, 0.5], ts=10.0))
    fraud = aggregator.advance(1000.0).snapshot().models[0]
    assert fraud.predictions_total == counted.lines["ok"] + counted.lines["late"]


def test_a_count_window_added_by_a_reload_puts_later_joins_on_the_right_rows():
    import numpy as np

    from monitor.core.aggregate import Aggregator

    def make(windows):
        return build_config({
            "sources": [{"name": "s", "path": "/logs/p.jsonl", "model": "m"}],
            "labels": [{"name": "l", "path": "/logs/l.jsonl", "model": "m"}],
            "models": {"m": {"classes": ["a", "b"], "windows": windows, "min_samples": 1}}})

    def lines(rows):
        return b"".join(row + b"\n" for row in rows), len(rows)

    agg = Aggregator(make(["1h"]))
    source, labels = agg.config.sources[0], agg.config.labels[0]
    data, n = lines([b'{"ts": 100, "probs": [0.5, 0.5]}'] * 37)
    agg.ingest_predictions(source, data, n, 100.0, 100.0)
    agg, dropped = agg.reconfigure(make(["1h", {"count": 10}]))
    assert dropped == []
    data, n = lines([b'{"ts": 101, "id": "r%d", "probs": [0.9, 0.1]}' % i for i in range(3)])
    agg.ingest_predictions(source, data, n, 101.0, 101.0)
    data, n = lines([b'{"id": "r0", "label": "a"}'])
    agg.ingest_labels(labels, data, n, 102.0, 102.0)
    snap = agg.advance(102.0).snapshot().models[0]
    count = snap.windows.index("count:10")
    assert snap.window_labels[count] == 1
    assert snap.log_loss[count] == pytest.approx(-np.log(0.9))


def test_accuracy_takes_the_lowest_index_on_ties_and_ece_bins_confidences_on_their_edges():
    """Hand-computed from DESIGN.md: bin = min(floor(conf * 10), 9) in float64, so 0.4,
    0.5 and 0.6 open their bins, 0.7 * 10 = 7.000000000000001 is bin 7, 1.0 is bin 9."""
    probs = [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.4, 0.3, 0.3], [1.0, 0.0, 0.0],
             [0.3, 0.7, 0.0], [0.2, 0.2, 0.6]]
    labels = [0, 1, 2, 0, 1, 0]
    model = ModelState("m", model_config(windows=(time_window(300.0), count_window(10)),
                                         min_samples=6))
    model.ingest(predictions([float(i) for i in range(6)], probs, labels), now=6.0)
    snapshot = model.advance(6.0).snapshot()
    for i in range(2):
        assert snapshot.accuracy[i] == approx(3 / 6, abs=1e-12)  # [.5, .5] predicts class 0
        assert snapshot.expected_calibration_error[i] == approx((0.4 + 0.3 + 0.6) / 6, abs=1e-12)
        assert snapshot.brier_score[i] == approx((0.5 + 0.5 + 0.74 + 0.0 + 0.18 + 1.04) / 6,
                                                 abs=1e-12)
    labelled = list(zip(np.array(probs), labels))
    want = expected_label_metrics(np.array([2, 2, 1]) / 5, labelled, 0.0, EPS)
    assert snapshot.expected_calibration_error[0] == approx(want["ece"], abs=1e-12)


def test_joined_labels_count_in_the_label_metrics_and_the_log_loss_counter_with_their_probs():
    cfg = build_config({
        "sources": [{"name": "s", "path": "/logs/p.jsonl", "model": "m"}],
        "labels": [{"name": "l", "path": "/logs/l.jsonl", "model": "m"}],
        "models": {"m": {"classes": ["a", "b", "c"], "windows": ["1h", {"count": 50}],
                         "min_samples": 1}}})
    aggregator = Aggregator(cfg)
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.ones(3), size=40).round(6)
    probs[:, -1] = 1.0 - probs[:, :-1].sum(axis=1)
    ingest_predictions(aggregator, cfg.sources[0], [
        line(ts=100.0 + i, id=f"r{i}", probs=p.tolist(), **({"label": int(i % 3)} if i < 10 else {}))
        for i, p in enumerate(probs)], now=140.0)
    joined = {i: int(rng.integers(3)) for i in range(10, 40, 2)}
    ingest_labels(aggregator, cfg.labels[0], [line(id=f"r{i}", label=y) for i, y in joined.items()],
                  now=150.0)
    snapshot = aggregator.advance(150.0).snapshot().models[0]
    pairs = [(probs[i], i % 3) for i in range(10)] + [(probs[i], y) for i, y in joined.items()]
    losses = [-math.log(max(p[y], EPS)) for p, y in pairs]
    assert snapshot.log_loss_sum_total == approx(sum(losses), rel=1e-12)
    assert snapshot.reference_log_loss == approx(np.mean(losses), rel=1e-12)
    a = np.bincount([y for _, y in pairs], minlength=3) / len(pairs)
    want = expected_label_metrics(a, pairs, 0.0, EPS)
    for i in range(2):  # the time window and the count window
        assert snapshot.window_labels[i] == len(pairs)
        assert snapshot.log_loss[i] == approx(want["log_loss"], rel=1e-12)
        assert snapshot.brier_score[i] == approx(want["brier"], rel=1e-12)
        assert snapshot.accuracy[i] == approx(want["accuracy"], rel=1e-12)
        assert snapshot.expected_calibration_error[i] == approx(want["ece"], rel=1e-12, abs=1e-15)
        assert snapshot.label_kl_divergence[i] == approx(0.0, abs=1e-12)


REST_EVENTS = st.lists(st.tuples(st.floats(-900.0, 0.0), distributions(K), st.integers(-1, K - 1)),
                       min_size=1, max_size=40)


@pytest.mark.parametrize("reference", [
    ReferenceSpec("cumulative"), ReferenceSpec("static", prior=PRIOR),
    ReferenceSpec("window", duration_s=600.0), ReferenceSpec("decay", half_life_s=300.0)])
@SLOW
@given(REST_EVENTS, st.integers(1, 12))
def test_reference_rest_is_the_reference_without_the_windows_own_events(reference, events_, count):
    """What each window is tested against: the events of the reference scope that are not
    in the window, decayed ones counted at their effective sample size."""
    from monitor.core.window import LABELLED, PRED, Layout

    from .strategies import Totals

    config = model_config(windows=(time_window(60.0), time_window(300.0), count_window(count),
                                   time_window(1200.0)), reference=reference)
    model = ModelState("m", config)
    clock = 10_000.0
    seen = [(clock + offset, p, label) for offset, p, label in events_]
    model.ingest(predictions(*zip(*seen)), clock)
    lay = Layout(K)
    for spec, window in zip(config.windows, model.windows):
        if spec.duration_s is None:
            mine = set(range(len(seen))[-count:])
        else:
            mine = {j for j, e in enumerate(seen) if in_time_window(e[0], clock, spec.duration_s)}
        rest = model.reference_rest(window, window.total())
        if reference.kind == "window":
            scope = {j for j, e in enumerate(seen) if in_time_window(e[0], clock, 600.0)}
            if spec.duration_s == 1200.0:
                assert rest is None  # the reference lies inside this window
                continue
        else:
            scope = set(range(len(seen)))
        others = [seen[j] for j in sorted(scope - mine)]
        assert rest is not None
        if reference.kind != "decay":
            Totals.of(K, others).assert_matches(rest)
            continue
        weights = [2.0 ** (-(clock - e[0]) / 300.0) for e in others]
        want = Totals.of(K, others, weights=weights)
        labelled_w = [w for w, e in zip(weights, others) if e[2] >= 0]
        ess = sum(weights) ** 2 / sum(w * w for w in weights) if weights else 0.0
        ess_l = sum(labelled_w) ** 2 / sum(w * w for w in labelled_w) if labelled_w else 0.0
        if spec.duration_s is None:  # count windows know each event's time: exact
            assert rest[PRED] == approx(ess, rel=1e-9, abs=1e-9)
            assert rest[LABELLED] == approx(ess_l, rel=1e-9, abs=1e-9)
            scale = sum(weights) / sum(w * w for w in weights) if weights else 0.0
            assert rest[lay.probs] == approx(want.probs * scale, rel=1e-9, abs=1e-9)
        else:  # time windows: never a larger effective sample size than the truth
            assert rest[PRED] <= ess * (1 + 1e-9) + 1e-9
            assert rest[LABELLED] <= ess_l * (1 + 1e-9) + 1e-9
            # short by at most the weight change over one bucket per window event, in the
            # sum and in the squares, relative to what is left of each
            if weights:
                delta = 2 * (2.0 ** (spec.duration_s / 60 / 300.0) - 1) * len(mine)
                slack = 2 * delta / sum(weights) + delta / sum(w * w for w in weights)
                assert rest[PRED] >= ess * (1 - slack) - 1e-9


def test_static_label_shift_through_the_model_is_scipys_g_test_and_gated_on_labels():
    prior = (0.5, 0.3, 0.2)
    model = ModelState("m", model_config(windows=(time_window(300.0),), min_samples=50,
                                         reference=ReferenceSpec("static", prior=prior)))
    rng = np.random.default_rng(2)
    labels = rng.choice(3, size=60, p=[0.4, 0.3, 0.3])
    probs = rng.dirichlet(np.ones(3), size=60)
    older = rng.dirichlet(np.ones(3), size=200)  # in the reference scope, not in the window
    model.ingest(predictions(list(np.linspace(-2000, -1000, 200)), older,
                             list(rng.choice(3, size=200))), now=-1000.0)
    model.ingest(predictions(list(np.linspace(0, 10, 60)), probs, [-1] * 20 + list(labels[20:])),
                 now=10.0)
    assert math.isnan(model.advance(10.0).snapshot().label_shift_pvalue[0])  # 40 labels < 50
    assert math.isfinite(model.advance(10.0).snapshot().prediction_shift_pvalue[0])
    model.ingest(predictions([10.0] * 20, probs[:20], list(labels[:20])), now=10.0)
    snapshot = model.advance(10.0).snapshot()
    observed = np.bincount(labels, minlength=3)
    want = scipy.stats.power_divergence(observed, 60 * np.array(prior), lambda_="log-likelihood")
    assert snapshot.label_shift_pvalue[0] == approx(want.pvalue, rel=1e-9)
    for name in ("log_loss_shift_pvalue", "calibration_pvalue", "prediction_shift_pvalue"):
        value = getattr(snapshot, name)[0]
        assert 0.0 <= value <= 1.0, name


def test_a_window_equal_to_its_reference_has_no_shift_pvalues_but_a_calibration_one():
    model = ModelState("m", model_config(windows=(time_window(600.0),), min_samples=1,
                                         reference=ReferenceSpec("window", duration_s=600.0)))
    model.ingest(predictions([1.0, 2.0, 3.0], [[0.2, 0.3, 0.5]] * 3, [0, 1, 2]), now=3.0)
    snapshot = model.advance(3.0).snapshot()
    for name in ("label_shift_pvalue", "prediction_shift_pvalue", "log_loss_shift_pvalue"):
        assert math.isnan(getattr(snapshot, name)[0]), name
    assert 0.0 <= snapshot.calibration_pvalue[0] <= 1.0
