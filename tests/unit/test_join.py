"""join.py: the JoinStore against a reference model of DESIGN.md's join rules, restarts in
the middle, and joins through the Aggregator against brute force."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from pytest import approx

from monitor.core.aggregate import Aggregator
from monitor.core.join import JoinStore
from monitor.shell import checkpoint
from monitor.shell.config import build_config

from .strategies import FAST, SLOW, distributions, in_time_window, ingest_labels, ingest_predictions, line

K = 3


class JoinModel:
    """The join rules, written from the spec with plain dicts (events come in time order):
    - a prediction waits for its label; a label that comes first waits for its prediction;
    - both kinds are bounded by max_pending, the oldest dropped first (expired);
    - both expire when older than the ttl, in event time;
    - the first label counts; a later label for an id already labelled (or already
      waiting as an early label) is a duplicate; recently joined ids are remembered up to
      max_pending; a second prediction for a waiting or joined id is ignored."""

    def __init__(self, ttl_s: float, max_pending: int) -> None:
        self.ttl_s, self.max_pending = ttl_s, max_pending
        self.waiting: OrderedDict[str, tuple[float, int, tuple]] = OrderedDict()
        self.early: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self.joined: list[str] = []
        self.joins = self.expired = self.duplicates = 0

    def _join(self, request_id: str) -> None:
        self.joins += 1
        self.joined.append(request_id)
        self.joined = self.joined[-self.max_pending:]

    def prediction(self, request_id, ts, seq, probs) -> list:
        if request_id in self.early:
            label, _ = self.early.pop(request_id)
            self._join(request_id)
            return [(ts, seq, label, probs)]
        if request_id in self.waiting or request_id in self.joined:
            return []
        if len(self.waiting) >= self.max_pending:
            self.waiting.popitem(last=False)
            self.expired += 1
        self.waiting[request_id] = (ts, seq, probs)
        return []

    def label(self, request_id, label, ts) -> list:
        if request_id in self.waiting:
            p_ts, seq, probs = self.waiting.pop(request_id)
            self._join(request_id)
            return [(p_ts, seq, label, probs)]
        if request_id in self.joined or request_id in self.early:
            self.duplicates += 1
            return []
        if len(self.early) >= self.max_pending:
            self.early.popitem(last=False)
            self.expired += 1
        self.early[request_id] = (label, ts)
        return []

    def expire(self, now: float) -> None:
        for request_id in [i for i, (ts, _, _) in self.waiting.items() if ts < now - self.ttl_s]:
            del self.waiting[request_id]
            self.expired += 1
        for request_id in [i for i, (_, ts) in self.early.items() if ts < now - self.ttl_s]:
            del self.early[request_id]
            self.expired += 1


def joined_tuples(joined) -> list:
    return [(float(t), int(s), int(label), tuple(np.round(p, 12)))
            for t, s, label, p in zip(joined.ts, joined.seq, joined.labels, joined.probs)]


ids = st.sampled_from([f"r{i}" for i in range(12)])
stream_ops = st.lists(st.one_of(
    st.tuples(st.just("prediction"), ids, st.floats(0.0, 30.0), distributions(K)),
    st.tuples(st.just("label"), ids, st.floats(0.0, 30.0), st.integers(0, K - 1)),
    st.tuples(st.just("expire"), st.just(""), st.floats(0.0, 60.0), st.just(None)),
), max_size=60)


def run(store: JoinStore, ops: list, restart_at: int | None = None) -> tuple[JoinStore, list]:
    """Apply ops in time order (each op advances event time by its delta); with
    `restart_at`, checkpoint the store there and continue in a fresh one."""
    now, seq, out = 1_000.0, 0, []
    for i, (kind, request_id, delta, value) in enumerate(ops):
        if i == restart_at:
            meta, arrays = store.state()
            decoded_meta, decoded = checkpoint.decode(checkpoint.encode({"join": meta}, arrays))
            store = JoinStore(store.k, store.ttl_s, store.max_pending)
            store.restore(decoded_meta["join"], decoded)
        now += delta
        if kind == "prediction":
            out.append(joined_tuples(store.add_predictions(
                [request_id], np.array([now]), np.array([seq]), np.array([value]))))
            seq += 1
        elif kind == "label":
            out.append(joined_tuples(store.add_labels([request_id], np.array([value]), np.array([now]))))
        store.expire(now)
    return store, out


@SLOW
@given(stream_ops, st.integers(1, 6), st.sampled_from([20.0, 45.0, 1e9]))
def test_join_store_follows_the_join_rules_on_random_streams(ops, max_pending, ttl):
    store, got = run(JoinStore(K, ttl, max_pending), ops)
    model, want, now, seq = JoinModel(ttl, max_pending), [], 1_000.0, 0
    for kind, request_id, delta, value in ops:
        now += delta
        if kind == "prediction":
            want.append([(now, seq, label, tuple(np.round(p, 12)))
                         for _, seq, label, p in model.prediction(request_id, now, seq, value)])
            seq += 1
        elif kind == "label":
            want.append([(t, s, label, tuple(np.round(p, 12)))
                         for t, s, label, p in model.label(request_id, value, now)])
        model.expire(now)
    assert got == want
    assert (store.joins, store.expired, store.duplicates, store.pending) == (
        model.joins, model.expired, model.duplicates, len(model.waiting))


@SLOW
@given(stream_ops, st.integers(1, 6), st.sampled_from([20.0, 45.0, 1e9]), st.data())
def test_a_restart_in_the_middle_gives_the_same_joins_as_no_restart(ops, max_pending, ttl, data):
    restart_at = data.draw(st.integers(0, len(ops)))
    straight, want = run(JoinStore(K, ttl, max_pending), ops)
    restarted, got = run(JoinStore(K, ttl, max_pending), ops, restart_at)
    assert got == want
    assert (restarted.joins, restarted.expired, restarted.duplicates, restarted.pending) == (
        straight.joins, straight.expired, straight.duplicates, straight.pending)


def one_prediction(store, request_id, ts, seq=0):
    return store.add_predictions([request_id], np.array([ts]), np.array([seq]),
                                 np.array([[0.2, 0.3, 0.5]]))


def test_max_pending_evicts_the_oldest_waiting_prediction_first():
    store = JoinStore(K, 3600.0, max_pending=2)
    for seq, request_id in enumerate(["a", "b", "c"]):
        one_prediction(store, request_id, 10.0 + seq, seq)
    assert store.pending == 2 and store.expired == 1
    assert len(store.add_labels(["a"], np.array([0]), np.array([20.0])).labels) == 0  # gone
    joined = store.add_labels(["b", "c"], np.array([1, 2]), np.array([20.0, 20.0]))
    assert joined.seq.tolist() == [1, 2] and joined.labels.tolist() == [1, 2]
    assert joined.ts.tolist() == [11.0, 12.0]


def test_predictions_and_early_labels_expire_after_the_ttl_in_event_time():
    store = JoinStore(K, 60.0, max_pending=100)
    one_prediction(store, "p", 100.0)
    store.add_labels(["early"], np.array([1]), np.array([100.0]))
    store.expire(160.0)  # exactly the ttl old: still waiting
    assert (store.pending, store.expired) == (1, 0)
    store.expire(160.5)
    assert (store.pending, store.expired) == (0, 2)
    assert len(one_prediction(store, "early", 161.0).labels) == 0  # its label expired


def test_a_label_before_its_prediction_joins_at_the_predictions_time():
    store = JoinStore(K, 60.0, max_pending=100)
    assert len(store.add_labels(["x"], np.array([2]), np.array([50.0])).labels) == 0
    joined = one_prediction(store, "x", 55.0, seq=7)
    assert joined.ts.tolist() == [55.0] and joined.seq.tolist() == [7] and joined.labels.tolist() == [2]
    assert joined.probs.tolist() == [[0.2, 0.3, 0.5]]
    assert store.joins == 1 and store.pending == 0


def test_the_first_label_counts_and_later_ones_are_duplicates():
    store = JoinStore(K, 60.0, max_pending=100)
    store.add_labels(["x"], np.array([0]), np.array([1.0]))
    store.add_labels(["x"], np.array([1]), np.array([2.0]))  # early twice
    assert one_prediction(store, "x", 3.0).labels.tolist() == [0]
    store.add_labels(["x"], np.array([2]), np.array([4.0]))  # after the join
    one_prediction(store, "y", 5.0)
    assert store.add_labels(["y", "y"], np.array([1, 2]), np.array([6.0, 6.0])).labels.tolist() == [1]
    assert (store.joins, store.duplicates) == (2, 3)


PIPELINE = {
    "sources": [{"name": "preds", "path": "/logs/p.jsonl"}],
    "labels": [{"name": "feedback", "path": "/logs/l.jsonl", "join_ttl": "1h"}],
    "models": {"fraud": {"classes": ["legit", "fraud", "other"], "windows": ["1m", "5m", {"count": 5}],
                         "min_samples": 1}},
}

pipeline_stream = st.lists(st.tuples(
    st.floats(0.0, 20.0),  # seconds since the previous prediction
    distributions(K, zeros=False),
    st.lists(st.tuples(st.integers(-40, 40), st.integers(0, K - 1)), max_size=2),  # label delays
), min_size=1, max_size=25)


@SLOW
@given(pipeline_stream, st.integers(1, 6))
def test_labels_joined_through_the_aggregator_land_at_the_predictions_time(stream, per_block):
    """Brute force: a prediction is labelled by the first label line for its id, whenever
    it comes; its label counts in labels_total, in the reference, and in every window that
    holds the prediction (by the prediction's time, or its place among the last N)."""
    cfg = build_config(PIPELINE)
    aggregator = Aggregator(cfg)
    events, ts = [], 10_000.0
    for i, (gap, probs, labels) in enumerate(stream):
        ts += gap
        probs = np.round(probs, 6)
        probs /= probs.sum()
        events.append((ts, "p", f"r{i}", probs))
        events += [(ts + delay, "l", f"r{i}", label) for delay, label in labels]
    events.sort(key=lambda e: e[0])  # arrival in event time: some labels come first
    for start in range(0, len(events), per_block):
        chunk = events[start:start + per_block]
        now = chunk[-1][0]
        preds = [line(model="fraud", id=i, ts=t, probs=p.tolist()) for t, kind, i, p in chunk if kind == "p"]
        labels = [line(id=i, label=int(v), ts=t) for t, kind, i, v in chunk if kind == "l"]
        if preds:
            ingest_predictions(aggregator, cfg.sources[0], preds, now=now)
        if labels:
            ingest_labels(aggregator, cfg.labels[0], labels, now=now)

    predicted = [(t, i, p) for t, kind, i, p in events if kind == "p"]
    first_label: dict[str, int] = {}
    label_lines: dict[str, int] = {}
    for _, kind, i, v in events:
        if kind == "l":
            first_label.setdefault(i, v)
            label_lines[i] = label_lines.get(i, 0) + 1
    labelled = [(t, p, first_label[i]) for t, i, p in predicted if i in first_label]
    clock = max(e[0] for e in events)
    snapshot = aggregator.advance(clock).snapshot()
    fraud = snapshot.models[0]
    assert list(fraud.labels_total) == list(np.bincount([v for _, _, v in labelled], minlength=K))
    assert fraud.reference_labels == len(labelled)
    assert snapshot.joins[0].joins == len(labelled)
    assert snapshot.joins[0].pending == len(predicted) - len(labelled)
    assert snapshot.duplicates == {"feedback": sum(n - 1 for n in label_lines.values())}

    inside_count = {id(p) for _, _, p in predicted[-5:]}
    for w, spec in enumerate(cfg.models["fraud"].windows):
        if spec.duration_s is None:
            held = [(p, v) for t, p, v in labelled if id(p) in inside_count]
            n = min(len(predicted), 5)
        else:
            held = [(p, v) for t, p, v in labelled if in_time_window(t, clock, spec.duration_s)]
            n = sum(in_time_window(t, clock, spec.duration_s) for t, _, _ in predicted)
        assert fraud.window_predictions[w] == n
        assert fraud.window_labels[w] == len(held)
        if held:
            want = np.mean([-math.log(max(p[v], 1e-12)) for p, v in held])
            assert fraud.log_loss[w] == approx(want, rel=1e-9)
        else:
            assert math.isnan(fraud.log_loss[w]) or n == 0


def test_a_label_line_for_a_model_its_source_does_not_feed_is_not_a_crash():
    """A label log line naming another configured model (a typo, a shared log) is a bad
    line at worst: it must not stop the daemon."""
    cfg = build_config({
        "sources": [{"name": "preds", "path": "/logs/p.jsonl"}],
        "labels": [{"name": "feedback", "path": "/logs/l.jsonl", "model": "fraud"}],
        "models": {"fraud": {"classes": ["a", "b"]}, "spam": {"classes": ["a", "b"]}},
    })
    aggregator = Aggregator(cfg)
    ingest_labels(aggregator, cfg.labels[0], [line(id="x", label=0, model="spam"),
                                              line(id="y", label=1)], now=100.0)
    counted = aggregator.advance(100.0).snapshot().sources[1].lines
    assert counted["ok"] + counted["rejected"] == 2


@FAST
@given(st.lists(st.tuples(ids, st.integers(0, K - 1)), max_size=20), st.integers(1, 5))
def test_joined_ids_are_remembered_only_up_to_max_pending(labels, max_pending):
    store = JoinStore(K, 1e9, max_pending)
    for seq, (request_id, label) in enumerate(labels):
        one_prediction(store, request_id, float(seq), seq)
        store.add_labels([request_id], np.array([label]), np.array([float(seq)]))
    assert len(store.joined) <= max_pending
    assert store.pending <= max_pending and len(store.early) <= max_pending
