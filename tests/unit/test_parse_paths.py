"""The typed block decoder (fast path) and the plain json path agree on every line."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.core.decode import BlockDecoder
from monitor.core.parse import Known, Reason, parse_predictions
from monitor.core.settings import Fields

CLASSES = {"fraud": ("legit", "fraud"), "three": ("a", "b", "c")}
WANTED = ("timestamp", "model", "probabilities", "label", "id")


resolve = Known(CLASSES)


values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 5), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4), st.sampled_from(["legit", "fraud", "a", "2026-11-24T10:00:00Z", "1.5"]))
probs = st.one_of(
    st.lists(st.floats(0, 1), min_size=2, max_size=3).map(lambda p: [x / (sum(p) or 1) for x in p]),
    st.lists(st.floats(-1, 2), min_size=1, max_size=4),
    st.lists(values, max_size=3),
    st.dictionaries(st.sampled_from(["legit", "fraud", "a", "zz"]), st.floats(0, 1), max_size=2),
    values)
objects = st.fixed_dictionaries(
    {},
    optional={"ts": st.one_of(values, st.floats(1e9, 2e9)), "model": st.sampled_from(
        ["fraud", "three", "nope", "", 3, None]), "probs": probs, "label": values,
        "id": values, "prediction": values, "extra": st.just("\udcff")})
lines = st.one_of(
    objects.map(lambda o: json.dumps(o, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"  ", b"{not json", b"[1]", b'{"probs": [0.5, 0.5]} {"probs": [1, 0]}',
                     b'{"probs": [NaN, 1]}', b'{"probs": [0.5, 0.5], "x": "\xff"}', b'{"probs": [0.5,',
                     b'0.5]}, {"probs": [1, 0]}']))


def canonical(parsed):
    rejects = [(r.index, r.reason) for r in parsed.rejects]
    preds = {m: (p.index.tolist(), p.ts.tolist(), np.round(p.probs, 15).tolist(), p.labels.tolist(),
                 p.ids) for m, p in parsed.predictions.items()}
    return rejects, preds, parsed.blank


@settings(max_examples=300, deadline=None)
@given(st.lists(lines, min_size=1, max_size=30), st.sampled_from([None, "fraud"]))
def test_fast_and_plain_paths_give_the_same_answer(block, default_model):
    data = b"\n".join(block) + b"\n"
    fields = Fields()
    fast = parse_predictions(data, data.count(b"\n"), fields, default_model, resolve, 123.0, 1e-3,
                             BlockDecoder(fields, WANTED))
    plain = parse_predictions(data, data.count(b"\n"), fields, default_model, resolve, 123.0, 1e-3)
    assert canonical(fast) == canonical(plain)


def test_a_block_of_regular_lines_takes_the_fast_path():
    rows = [{"ts": 1.0 + i, "model": "three", "id": f"r{i}", "probs": [0.2, 0.3, 0.5], "label": i % 3}
            for i in range(50)]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    decoder = BlockDecoder(Fields(), WANTED)
    assert decoder.decode_block(data, 50) is not None
    parsed = parse_predictions(data, 50, Fields(), None, resolve, 0.0, 1e-3, decoder)
    got = parsed.predictions["three"]
    assert got.labels.tolist() == [i % 3 for i in range(50)]
    assert got.ids[7] == "r7" and got.ts[7] == 8.0


def test_blank_lines_and_two_values_on_a_line_are_not_trusted_to_the_block_decoder():
    decoder = BlockDecoder(Fields(), WANTED)
    assert decoder.decode_block(b'{"probs": [1, 0]}\n\n', 2) is None
    assert decoder.decode_block(b'{"probs": [1, 0]} {"probs": [1, 0]}\n', 1) is None


def test_dotted_field_paths_decode_nested_values():
    fields = Fields(probabilities=("output", "scores"), label=("truth", "label"))
    decoder = BlockDecoder(fields, WANTED)
    data = b'{"output": {"scores": [0.25, 0.75]}, "truth": {"label": "fraud"}}\n{"output": null}\n'
    fast = parse_predictions(data, data.count(b"\n"), fields, "fraud", resolve, 5.0, 1e-3, decoder)
    plain = parse_predictions(data, data.count(b"\n"), fields, "fraud", resolve, 5.0, 1e-3)
    assert canonical(fast) == canonical(plain)
    assert fast.predictions["fraud"].labels.tolist() == [1]
    assert [r.reason for r in fast.rejects] == [Reason.MISSING_FIELD]


def test_a_time_far_in_the_future_or_a_bad_model_name_is_rejected_on_both_paths():
    rows = [
        b'{"ts": 123.0, "model": "fraud", "probs": [0.5, 0.5]}',
        b'{"ts": 90000.0, "model": "fraud", "probs": [0.5, 0.5]}',  # a day and more ahead
        b'{"model": "\\ud800x", "probs": [0.5, 0.5]}',  # a lone surrogate
        b'{"model": "' + b"m" * 300 + b'", "probs": [0.5, 0.5]}',
    ]
    data = b"\n".join(rows) + b"\n"
    fields = Fields()
    fast = parse_predictions(data, 4, fields, None, resolve, 123.0, 1e-3, BlockDecoder(fields, WANTED))
    plain = parse_predictions(data, 4, fields, None, resolve, 123.0, 1e-3)
    assert canonical(fast) == canonical(plain)
    assert [(r.index, r.reason) for r in fast.rejects] == [
        (1, Reason.BAD_TIMESTAMP), (2, Reason.BAD_MODEL), (3, Reason.BAD_MODEL)]
