"""The journal in memory: deltas that rebuild the state exactly, records whose damage is
told apart from a torn tail, and a fuzz of restore over mutated real state in which only
CheckpointError may escape (bytes only: the files are tested in tests/system)."""

from __future__ import annotations

import contextlib
import copy
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.core.aggregate import Aggregator, state_budget
from monitor.core.errors import CheckpointError
from monitor.core.join import MAX_ID_LENGTH
from monitor.shell import checkpoint
from monitor.shell.config import build_config
from monitor.shell.daemon import _tail_state

from .strategies import FAST, SLOW, assert_same_snapshot, ingest_labels, ingest_predictions, line

CONFIG = build_config({
    "sources": [{"name": "preds", "path": "/logs/p.jsonl"}],
    "labels": [{"name": "feedback", "path": "/logs/l.jsonl", "join_ttl": "1h", "max_pending": 40}],
    "models": {
        "fraud": {"classes": ["legit", "fraud"], "windows": ["1m", {"count": 6}], "min_samples": 1},
        "spam": {"classes": ["ham", "spam", "eggs"], "windows": ["10m"],
                 "reference": {"decay": "10m"}, "min_samples": 1},
        "default": {"classes": ["x", "y"], "windows": ["1m"], "min_samples": 1},
    },
})
BUDGET = state_budget(CONFIG)
TAIL = {"preds": {"path": "/logs/p.jsonl", "files": [
    {"dev": 1, "ino": 2, "fingerprint": "64:ab", "path": "/logs/p.jsonl", "offset": 99,
     "line_no": 3}], "history": {"64:cd": 10}}}


def feed(aggregator: Aggregator, step: int) -> None:
    """Predictions with ids (some labelled inline), labels joined, early and duplicate."""
    rng = np.random.default_rng(step)
    lines = []
    for i in range(9):
        model = ["fraud", "spam", "extra"][i % 3]
        k = 3 if model == "spam" else 2
        probs = rng.dirichlet(np.ones(k)).round(6)
        probs[-1] = 1.0 - probs[:-1].sum()
        fields = {"model": model, "probs": probs.tolist(), "ts": 1000.0 + 20 * step + i,
                  "id": f"{model}-{step}-{i}"}
        if i % 4 == 0:
            fields["label"] = int(rng.integers(k))
        lines.append(line(**fields))
    ingest_predictions(aggregator, CONFIG.sources[0], lines, now=1000.0 + 20 * step)
    labels = [line(id=f"fraud-{step}-{i}", label=i % 2, model="fraud") for i in (3, 6)]
    labels += [line(id=f"fraud-{step}-3", label=1, model="fraud"),  # a duplicate
               line(id=f"fraud-{step + 1}-6", label=0, model="fraud")]  # early
    ingest_labels(aggregator, CONFIG.labels[0], labels, now=1000.0 + 20 * step + 5)


def checkpoint_meta(aggregator: Aggregator) -> tuple[dict, dict]:
    meta, arrays = aggregator.state(stores=False)
    return {"tail": TAIL, "daemon": {"checkpoint_failures": 2}, "aggregator": meta}, arrays


def written_state(steps: int, records: int) -> tuple[Aggregator, bytes, bytes]:
    """An aggregator fed `steps` times, and the snapshot and journal bytes the daemon
    would have written for it: a snapshot after the first step, a record after each of
    the next `records`, and the last steps not checkpointed at all."""
    aggregator = Aggregator(CONFIG)
    feed(aggregator, 0)
    meta, arrays = checkpoint_meta(aggregator)
    stores, store_arrays = aggregator.join_state()
    aggregator.record_joins()
    snapshot = checkpoint.encode({**meta, "stores": stores, "generation": 1},
                                 {**arrays, **store_arrays})
    shadow = {name: a.copy() for name, a in arrays.items()}
    journal = checkpoint.journal_header(1)
    for step in range(1, steps):
        feed(aggregator, step)
        if step <= records:
            meta, arrays = checkpoint_meta(aggregator)
            record, delta = checkpoint.make_record(shadow, meta, arrays,
                                                   aggregator.take_join_ops())
            checkpoint.apply(shadow, {k: v.copy() for k, v in delta.items()})
            journal += record
    return aggregator, snapshot, journal


def restored(snapshot: bytes, journal: bytes) -> tuple[Aggregator, checkpoint.Saved]:
    """What the daemon's restore does, in memory; then the restored state is used (a
    snapshot and more lines), so that state that loads but cannot work also fails."""
    meta, arrays = checkpoint.decode(snapshot, BUDGET)
    saved = checkpoint.restore(meta, arrays, journal, BUDGET)
    aggregator = Aggregator(CONFIG)
    if not isinstance(saved.meta.get("aggregator"), dict):
        raise CheckpointError("no aggregator")
    dropped = aggregator.restore({**saved.meta["aggregator"], "stores": saved.meta.get("stores")},
                                 saved.arrays)
    aggregator.replay_joins(saved.joins, dropped)
    _tail_state(saved.meta.get("tail"))
    aggregator.advance(2000.0).snapshot()
    feed(aggregator, 50)
    aggregator.advance(2100.0).snapshot()
    return aggregator, saved


def same_state(a: Aggregator, b: Aggregator) -> None:
    meta_a, arrays_a = a.state()
    meta_b, arrays_b = b.state()
    assert meta_a == meta_b
    assert arrays_a.keys() == arrays_b.keys()
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)
    assert_same_snapshot(a.advance(1500.0).snapshot(), b.advance(1500.0).snapshot())


@pytest.mark.parametrize("records", [0, 1, 4])
def test_snapshot_plus_records_restores_exactly_the_state_they_recorded(records):
    original, snapshot, journal = written_state(records + 1, records)
    meta, arrays = checkpoint.decode(snapshot, BUDGET)
    saved = checkpoint.restore(meta, arrays, journal, BUDGET)
    assert saved.records == records and not saved.torn
    assert saved.meta["daemon"] == {"checkpoint_failures": 2}
    again = Aggregator(CONFIG)
    dropped = again.restore({**saved.meta["aggregator"], "stores": saved.meta["stores"]},
                            saved.arrays)
    again.replay_joins(saved.joins, dropped)
    same_state(again, original)
    feed(original, 9)
    feed(again, 9)  # and the same future: the joins still waiting join alike
    same_state(again, original)


def test_a_record_holds_what_changed_not_the_whole_state():
    aggregator = Aggregator(CONFIG)
    for step in range(30):
        feed(aggregator, step)
    meta, arrays = checkpoint_meta(aggregator)
    _, store_arrays = aggregator.join_state()
    full = len(checkpoint.encode(meta, {**arrays, **store_arrays}))
    shadow = {name: a.copy() for name, a in arrays.items()}
    aggregator.record_joins()
    ingest_labels(aggregator, CONFIG.labels[0], [line(id="fraud-29-0", label=1, model="fraud")],
                  now=1700.0)
    meta, arrays = checkpoint_meta(aggregator)
    record, delta = checkpoint.make_record(shadow, meta, arrays, aggregator.take_join_ops())
    assert len(record) < full / 4
    assert not any(key.startswith("=m1.window") for key in delta)  # spam untouched


def test_every_cut_of_the_last_record_is_a_torn_tail_and_keeps_the_records_before():
    _, snapshot, journal = written_state(4, 3)
    meta, arrays = checkpoint.decode(snapshot, BUDGET)
    whole = checkpoint.restore(copy.deepcopy(meta), dict(arrays), journal, BUDGET)
    last = journal.rindex(checkpoint.RECORD_MAGIC)
    for cut in range(last + 1, len(journal), 7):
        saved = checkpoint.restore(copy.deepcopy(meta), {k: v.copy() for k, v in arrays.items()},
                                   journal[:cut], BUDGET)
        assert (saved.records, saved.torn) == (whole.records - 1, True)


def test_a_bad_crc_at_the_end_is_torn_and_in_the_middle_is_an_error():
    _, snapshot, journal = written_state(4, 3)
    meta, arrays = checkpoint.decode(snapshot, BUDGET)
    first = journal.index(checkpoint.RECORD_MAGIC)
    last = journal.rindex(checkpoint.RECORD_MAGIC)
    end = bytearray(journal)
    end[-1] ^= 0x40
    saved = checkpoint.restore(meta, dict(arrays), bytes(end), BUDGET)
    assert saved.torn and saved.records == 2
    middle = bytearray(journal)
    middle[first + checkpoint.RECORD.size + 3] ^= 0x40
    assert first + checkpoint.RECORD.size + 3 < last
    with pytest.raises(CheckpointError, match="CRC"):
        checkpoint.restore(meta, dict(arrays), bytes(middle), BUDGET)


def test_an_absurd_record_length_is_an_error_not_an_allocation():
    _, snapshot, journal = written_state(2, 1)
    meta, arrays = checkpoint.decode(snapshot, BUDGET)
    at = journal.index(checkpoint.RECORD_MAGIC)
    for field_at in (4, 8):  # body length, raw length
        bad = bytearray(journal)
        bad[at + field_at:at + field_at + 4] = struct.pack("<I", 2**32 - 1)
        with pytest.raises(CheckpointError, match="absurd"):
            checkpoint.restore(meta, dict(arrays), bytes(bad), BUDGET)


def test_a_record_that_inflates_beyond_its_declared_length_is_an_error():
    body = checkpoint.zlib.compress(b"\0" * (1 << 20))
    sizes = struct.pack("<II", len(body), 64)
    crc = checkpoint.zlib.crc32(body, checkpoint.zlib.crc32(sizes))
    record = checkpoint.RECORD.pack(checkpoint.RECORD_MAGIC, len(body), 64, crc) + body
    _, snapshot, _ = written_state(1, 0)
    meta, arrays = checkpoint.decode(snapshot, BUDGET)
    with pytest.raises(CheckpointError, match="inflates"):
        checkpoint.restore(meta, arrays, checkpoint.journal_header(1) + record + record, BUDGET)


def test_a_journal_of_another_generation_is_not_applied():
    _, snapshot, journal = written_state(3, 2)
    meta, arrays = checkpoint.decode(snapshot, BUDGET)
    older = checkpoint.journal_header(0) + journal[len(checkpoint.journal_header(1)):]
    assert checkpoint.restore(meta, arrays, older, BUDGET).records == 0


arrays_pairs = st.integers(1, 12).flatmap(lambda n: st.tuples(
    st.lists(st.lists(st.floats(allow_nan=True), min_size=3, max_size=3), min_size=n, max_size=n),
    st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 2), st.floats(allow_nan=True)),
             max_size=2 * n)))


@FAST
@given(arrays_pairs, st.booleans())
def test_diff_then_apply_rebuilds_the_new_arrays_bit_for_bit(pair, reshape):
    rows, changes = pair
    old = {"a": np.array(rows), "b": np.arange(len(rows), dtype=np.int16)}
    new = {k: v.copy() for k, v in old.items()}
    for r, c, x in changes:
        new["a"][r, c] = x
        new["b"][r] += 1
    if reshape:
        new["c"] = np.zeros((2, 2))
    target = {k: v.copy() for k, v in old.items()}
    checkpoint.apply(target, checkpoint.diff(old, new))
    assert target.keys() == new.keys()
    for name in new:
        assert target[name].tobytes() == new[name].tobytes()


# -- the fuzz ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=6)
    | st.floats(), lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)


def paths(tree: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            out += paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            out += paths(value, (*prefix, i))
    return out


def replaced(tree: object, path: tuple, value: object) -> object:
    if not path:
        return value
    out = copy.copy(tree)
    out[path[0]] = replaced(tree[path[0]], path[1:], value)  # type: ignore[index]
    return out


_, SNAPSHOT, JOURNAL = written_state(4, 3)
SNAPSHOT_META, SNAPSHOT_ARRAYS = checkpoint.decode(SNAPSHOT)


def only_checkpoint_errors(snapshot: bytes, journal: bytes) -> None:
    with contextlib.suppress(CheckpointError):
        restored(snapshot, journal)


@SLOW
@given(st.data(), json_values)
def test_restore_of_snapshot_metadata_replaced_anywhere_raises_only_checkpoint_errors(data, value):
    meta = {k: v for k, v in SNAPSHOT_META.items() if k not in ("version", "arrays")}
    path = data.draw(st.sampled_from(paths(meta)[1:]))
    only_checkpoint_errors(checkpoint.encode(replaced(meta, path, value), SNAPSHOT_ARRAYS), JOURNAL)


arrays_like = st.one_of(
    st.lists(st.floats(), max_size=12).map(lambda xs: np.array(xs, dtype=np.float64)),
    st.lists(st.integers(-2**63, 2**63 - 1), max_size=12).map(lambda xs: np.array(xs, dtype=np.int64)),
    st.lists(st.integers(-2**15, 2**15 - 1), max_size=12).map(lambda xs: np.array(xs, dtype=np.int16)),
    st.binary(max_size=30).map(lambda b: np.frombuffer(b, dtype=np.uint8)),
    st.tuples(st.integers(0, 4), st.integers(0, 4)).map(lambda s: np.full(s, 7.0)))


@SLOW
@given(st.data(), arrays_like)
def test_restore_of_a_snapshot_array_replaced_raises_only_checkpoint_errors(data, array):
    meta = {k: v for k, v in SNAPSHOT_META.items() if k not in ("version", "arrays")}
    name = data.draw(st.sampled_from(sorted(SNAPSHOT_ARRAYS)))
    only_checkpoint_errors(checkpoint.encode(meta, {**SNAPSHOT_ARRAYS, name: array}), JOURNAL)


@SLOW
@given(st.data(), json_values)
def test_restore_of_a_journal_record_rewritten_anywhere_raises_only_checkpoint_errors(data, value):
    """Records re-encoded (CRCs right) with one metadata value or array replaced."""
    header = checkpoint.journal_header(1)
    records = []
    body = JOURNAL[len(header):]
    while body:
        _, length, raw_len, _ = checkpoint.RECORD.unpack_from(body)
        records.append(checkpoint.decode_record_body(
            body[checkpoint.RECORD.size:checkpoint.RECORD.size + length], raw_len))
        body = body[checkpoint.RECORD.size + length:]
    i = data.draw(st.integers(0, len(records) - 1))
    meta, arrays = records[i]
    if data.draw(st.booleans()):
        meta = replaced(meta, data.draw(st.sampled_from(paths(meta)[1:])), value)
    else:
        name = data.draw(st.sampled_from(sorted(arrays)))
        arrays = {**arrays, name: data.draw(arrays_like)}
    records[i] = (meta, arrays)
    journal = header + b"".join(checkpoint.encode_record(m, a) for m, a in records)
    only_checkpoint_errors(SNAPSHOT, journal)


@SLOW
@given(st.binary(min_size=1, max_size=8), st.integers(0, 10**6), st.booleans())
def test_restore_of_journal_bytes_overwritten_raises_only_checkpoint_errors(junk, at, insert):
    at %= len(JOURNAL)
    journal = (JOURNAL[:at] + junk + JOURNAL[at + (0 if insert else len(junk)):])
    only_checkpoint_errors(SNAPSHOT, journal)


def test_the_budget_holds_every_store_full_of_the_longest_ids():
    """The budget that restore checks declared sizes against is never below a state this
    config can really have: every model admitted, stores full of the worst ids."""
    aggregator = Aggregator(CONFIG)
    for step in range(3):
        feed(aggregator, step)
    worst = "\u2028" * MAX_ID_LENGTH  # escaped to six bytes each in JSON
    for name in ("fraud", "spam", "extra"):
        model = aggregator.models[name]
        store = aggregator._store(model)
        assert store is not None
        n = store.max_pending
        ids = [f"{i:04d}{worst}"[:MAX_ID_LENGTH] for i in range(3 * n)]
        store.add_predictions(ids[:n], np.zeros(n), np.arange(n), np.full((n, model.k), 0.5))
        store.add_labels(ids[n:2 * n], np.zeros(n, dtype=np.int64), np.zeros(n))  # early
        store.add_labels(ids[:n // 2], np.zeros(n // 2, dtype=np.int64), np.zeros(n // 2))
    _, arrays = aggregator.state()
    assert sum(a.nbytes for a in arrays.values()) <= BUDGET
    assert BUDGET < 1 << 30  # and far below what a hostile header declares


def test_an_id_longer_than_the_limit_is_refused_and_counted_as_expired():
    store = Aggregator(CONFIG)._store(Aggregator(CONFIG).models["fraud"])
    assert store is not None
    long_id = "x" * (MAX_ID_LENGTH + 1)
    store.add_predictions([long_id, "short"], np.zeros(2), np.arange(2), np.full((2, 2), 0.5))
    store.add_labels(["y" * 10**6], np.zeros(1, dtype=np.int64), np.zeros(1))
    assert (store.pending, len(store.early), store.expired) == (1, 0, 2)


def test_a_records_sections_replace_the_snapshots_whole():
    """A fingerprint dropped from a tailer's history since the snapshot stays dropped."""
    aggregator, snapshot, _ = written_state(1, 0)
    meta, arrays = checkpoint_meta(aggregator)
    meta["tail"] = {"preds": {**TAIL["preds"], "history": {}}}
    record, _ = checkpoint.make_record({}, meta, arrays, [])
    saved = checkpoint.restore(*checkpoint.decode(snapshot, BUDGET),
                               checkpoint.journal_header(1) + record, BUDGET)
    assert saved.meta["tail"]["preds"]["history"] == {}
    assert saved.meta["stores"]  # what records never hold stays the snapshot's


V01_FIXTURE = Path(__file__).parent.parent / "fixtures" / "v0.1" / "checkpoint.npz"
V01_CONFIG = build_config({
    "sources": [{"name": "preds", "path": "/logs/pred.jsonl"}],
    "labels": [{"name": "feedback", "path": "/logs/labels.jsonl", "join_ttl": "3650d"}],
    "models": {"fraud": {"classes": ["legit", "fraud"], "windows": ["5m", {"count": 100}],
                         "min_samples": 1}}})


def restored_v01() -> tuple[Aggregator, checkpoint.Saved]:
    meta, arrays = checkpoint.decode(V01_FIXTURE.read_bytes())
    saved = checkpoint.restore(meta, arrays, b"", state_budget(V01_CONFIG))
    aggregator = Aggregator(V01_CONFIG)
    aggregator.restore({**saved.meta["aggregator"], "stores": saved.meta["stores"]}, saved.arrays)
    return aggregator, saved


def test_a_v01_checkpoint_keeps_its_counters_and_join_store_and_starts_its_sums_empty():
    """The fixture of the real v0.1 daemon (300 predictions, 90 waiting): counters and
    the join store as v0.1 left them; windows and reference, whose v0.1 rows lack
    columns, empty, never half-rebuilt; log_loss_sum_total, new, at 0."""
    aggregator, saved = restored_v01()
    assert saved.upgraded == ["fraud: reference, window.5m, window.count:100"]
    model = aggregator.advance(1_700_000_400.0).snapshot().models[0]
    assert model.predictions_total == 300
    assert model.labels_total.tolist() == [110, 100]
    assert model.log_loss_sum_total == 0.0
    assert model.window_predictions.tolist() == [0.0, 0.0]
    assert model.reference_labels == 0.0
    assert np.isnan(model.prediction_shift_pvalue).all()
    join = aggregator.advance(1_700_000_400.0).snapshot().joins[0]
    assert (join.pending, join.joins) == (90, 180)

