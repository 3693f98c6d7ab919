"""parse.py: every rejection reason, on both the plain json path and the block decoder's
fast path; accepted shapes (probs list or object, hard predictions, names or indices,
dotted field paths, timestamps) and the renormalisation within sum_tolerance."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pytest import approx

from monitor.core.decode import BlockDecoder
from monitor.core.parse import Known, Reason, parse_labels, parse_predictions, parse_timestamp
from monitor.core.settings import Fields

from .strategies import FAST, block, distributions, line

CLASSES = {"fraud": ("legit", "fraud"), "three": ("a", "b", "c")}
WANTED = ("timestamp", "model", "probabilities", "prediction", "label", "id")
NOW = 1_800_000_000.0  # after every time the tests write: none is "from the future"
DEFAULT_FIELDS = Fields()


resolve = Known(CLASSES)  # fixed models, no `models.default`


@pytest.fixture(params=["plain", "block_decoder"])
def parse(request):
    """parse_predictions on a list of lines, through the plain path or the fast path."""

    def run(lines: list[bytes], fields: Fields = DEFAULT_FIELDS, default_model: str | None = "fraud",
            sum_tolerance: float = 1e-3):
        decoder = BlockDecoder(fields, WANTED) if request.param == "block_decoder" else None
        data, n = block(lines)
        return parse_predictions(data, n, fields, default_model, resolve, NOW, sum_tolerance, decoder)

    return run


def reasons(parsed) -> list[Reason]:
    return [r.reason for r in parsed.rejects]


def accepted(parsed, model: str = "fraud") -> np.ndarray:
    p = parsed.predictions.get(model)
    return np.zeros((0, 2)) if p is None else p.probs


def utc(*args: int, micro: int = 0) -> float:
    return datetime(*args, micro, tzinfo=timezone.utc).timestamp()


GOOD = {"probs": [0.25, 0.75]}
HUGE = b"1" + b"0" * 400  # past float range: int -> float raises OverflowError

REJECTED = [
    (b'{"probs": [0.5, 0.5], "note": "\xff"}', Reason.NOT_UTF8),
    (b"\xfe\xff", Reason.NOT_UTF8),
    (b"{not json", Reason.NOT_JSON),
    (b'{"probs": [0.5,', Reason.NOT_JSON),
    (b'{"probs": [0.5, 0.5]} {"probs": [1, 0]}', Reason.NOT_JSON),
    (b"[0.5, 0.5]", Reason.NOT_OBJECT),
    (b'"fraud"', Reason.NOT_OBJECT),
    (b"42", Reason.NOT_OBJECT),
    (line(model="fraud"), Reason.MISSING_FIELD),
    (line(model="fraud", ts=1.0, prediction=None), Reason.MISSING_FIELD),
    (line(probs=[0.5, 0.5], ts="yesterday"), Reason.BAD_TIMESTAMP),
    (line(probs=[0.5, 0.5], ts="2026-13-01T00:00:00Z"), Reason.BAD_TIMESTAMP),
    (line(probs=[0.5, 0.5], ts=True), Reason.BAD_TIMESTAMP),
    (line(probs=[0.5, 0.5], ts=[1]), Reason.BAD_TIMESTAMP),
    (b'{"probs": [0.5, 0.5], "ts": NaN}', Reason.BAD_TIMESTAMP),
    (b'{"probs": [0.5, 0.5], "ts": 1e999}', Reason.BAD_TIMESTAMP),
    (line(probs=[0.5, 0.5], model=3), Reason.BAD_MODEL),
    (line(probs=[0.5, 0.5], model=""), Reason.BAD_MODEL),
    (line(probs=[0.5, 0.5], model=["fraud"]), Reason.BAD_MODEL),
    (line(probs=[0.5, 0.5], id=1.5), Reason.BAD_ID),
    (line(probs=[0.5, 0.5], id=True), Reason.BAD_ID),
    (line(probs=[0.5, 0.5], id=["r"]), Reason.BAD_ID),
    (line(probs=[0.5, 0.5], id={"r": 1}), Reason.BAD_ID),
    (line(probs=[1.0]), Reason.WRONG_LENGTH),
    (line(probs=[0.2, 0.3, 0.5]), Reason.WRONG_LENGTH),
    (line(probs=[-0.1, 1.1]), Reason.BAD_PROBABILITY),
    (b'{"probs": [NaN, 1.0]}', Reason.BAD_PROBABILITY),
    (b'{"probs": [Infinity, 0.0]}', Reason.BAD_PROBABILITY),
    (b'{"probs": [1e999, 0.0]}', Reason.BAD_PROBABILITY),
    (line(probs=["0.5", "0.5"]), Reason.BAD_PROBABILITY),
    (line(probs=[None, 1.0]), Reason.BAD_PROBABILITY),
    (line(probs=[True, False]), Reason.BAD_PROBABILITY),
    (line(probs=[[0.5], [0.5]]), Reason.BAD_PROBABILITY),
    (line(probs="0.5,0.5"), Reason.BAD_PROBABILITY),
    (line(probs={"legit": -0.5, "fraud": 1.5}), Reason.BAD_PROBABILITY),
    (line(probs={"legit": "x", "fraud": 1.0}), Reason.BAD_PROBABILITY),
    (line(probs=[0.6, 0.6]), Reason.BAD_SUM),
    (line(probs=[0.0, 0.0]), Reason.BAD_SUM),
    (line(probs=[0.4, 0.5]), Reason.BAD_SUM),
    (line(probs={"legit": 0.4}), Reason.BAD_SUM),
    (line(probs=[0.5, 0.5], label=2), Reason.UNKNOWN_CLASS),
    (line(probs=[0.5, 0.5], label=-1), Reason.UNKNOWN_CLASS),
    (line(probs=[0.5, 0.5], label="spam"), Reason.UNKNOWN_CLASS),
    (line(probs=[0.5, 0.5], label=True), Reason.UNKNOWN_CLASS),
    (line(probs=[0.5, 0.5], label=0.5), Reason.UNKNOWN_CLASS),
    (line(probs={"legit": 0.5, "spam": 0.5}), Reason.UNKNOWN_CLASS),
    (line(prediction="spam"), Reason.UNKNOWN_CLASS),
    (line(prediction=2), Reason.UNKNOWN_CLASS),
    (line(prediction=True), Reason.UNKNOWN_CLASS),
    (line(probs=[0.5, 0.5], model="other"), Reason.UNKNOWN_MODEL),
    # Integers beyond 64 bits get their field's rejection, never an exception.
    (b'{"probs": [0.5, 0.5], "label": ' + HUGE + b"}", Reason.UNKNOWN_CLASS),
    (b'{"probs": [0.5, 0.5], "label": -' + HUGE + b"}", Reason.UNKNOWN_CLASS),
    (b'{"probs": [0.5, 0.5], "label": 9223372036854775808}', Reason.UNKNOWN_CLASS),
    (b'{"probs": [0.5, ' + HUGE + b"]}", Reason.BAD_PROBABILITY),
    (b'{"probs": [0.5, 18446744073709551616]}', Reason.BAD_SUM),
    (b'{"probs": {"legit": ' + HUGE + b"}}", Reason.BAD_PROBABILITY),
    (b'{"probs": [0.5, 0.5], "ts": ' + HUGE + b"}", Reason.BAD_TIMESTAMP),
    (b'{"probs": [0.5, 0.5], "ts": ' + b"7" * 5000 + b"}", Reason.BAD_TIMESTAMP),
    (b'{"probs": [0.5, 0.5], "id": ' + HUGE + b"}", Reason.BAD_ID),
    (b'{"prediction": ' + HUGE + b"}", Reason.UNKNOWN_CLASS),
    # Ids are bounded in bytes (max_id_bytes, default 256), not only by the line length.
    (line(probs=[0.5, 0.5], id="r" * 257), Reason.ID_TOO_LONG),
    (line(probs=[0.5, 0.5], id="\u00e9" * 129), Reason.ID_TOO_LONG),  # 258 bytes in UTF-8
    (line(probs=[0.5, 0.5], ts=NOW + 301), Reason.BAD_TIMESTAMP),  # beyond max_clock_skew
]


@pytest.mark.parametrize(("bad", "reason"), REJECTED, ids=[f"{r.value}:{b[:40]!r}" for b, r in REJECTED])
def test_each_bad_line_is_rejected_with_its_reason_and_never_reaches_the_predictions(parse, bad, reason):
    parsed = parse([line(**GOOD, ts=1.0), bad, line(**GOOD, ts=3.0)])
    assert [(r.index, r.reason) for r in parsed.rejects] == [(1, reason)]
    fraud = parsed.predictions["fraud"]
    assert fraud.index.tolist() == [0, 2]
    assert fraud.ts.tolist() == [1.0, 3.0]
    assert fraud.probs.tolist() == [[0.25, 0.75]] * 2
    assert parsed.blank == 0


def test_every_reason_except_too_long_is_reachable_from_a_line():
    """TOO_LONG is decided by the tailer (line length), TOO_MANY_MODELS by the
    aggregator's admission (test_aggregate.py), not by parsing."""
    assert {r for _, r in REJECTED} == set(Reason) - {Reason.TOO_LONG, Reason.TOO_MANY_MODELS}


def test_a_missing_model_with_no_default_is_a_missing_field(parse):
    parsed = parse([line(probs=[0.5, 0.5])], default_model=None)
    assert reasons(parsed) == [Reason.MISSING_FIELD]


def test_deeply_nested_json_is_rejected_not_raised(parse):
    """A bad line never stops the daemon: json's recursion limit is a bad line too."""
    deep = b'{"probs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    parsed = parse([deep, b"[" * 100_000, line(**GOOD)])
    assert reasons(parsed) in ([Reason.BAD_PROBABILITY, Reason.NOT_JSON], [Reason.NOT_JSON] * 2)
    assert parsed.predictions["fraud"].index.tolist() == [2]


def test_an_id_of_max_id_bytes_is_kept_and_one_byte_more_is_rejected(parse):
    parsed = parse([line(**GOOD, id="r" * 256), line(**GOOD, id="\u00e9" * 128),
                    line(**GOOD, id="\u00e9" * 128 + "r")])
    assert parsed.predictions["fraud"].ids == ["r" * 256, "\u00e9" * 128]
    assert [(r.index, r.reason) for r in parsed.rejects] == [(2, Reason.ID_TOO_LONG)]


@pytest.mark.parametrize("limit", [1, 8, 17])
def test_max_id_bytes_is_the_bound_on_both_paths(limit):
    """An integer id counts as its digits."""
    lines = [line(**GOOD, id="r" * limit), line(**GOOD, id="r" * (limit + 1)), line(**GOOD, id=10**limit)]
    data, n = block(lines)
    for decoder in (None, BlockDecoder(DEFAULT_FIELDS, WANTED)):
        parsed = parse_predictions(data, n, DEFAULT_FIELDS, "fraud", resolve, NOW, 1e-3, decoder,
                                   max_id_bytes=limit)
        assert parsed.predictions["fraud"].ids == ["r" * limit]
        assert reasons(parsed) == [Reason.ID_TOO_LONG, Reason.ID_TOO_LONG]


def test_a_time_beyond_the_clock_skew_is_rejected_saying_how_far_ahead(parse):
    parsed = parse([line(**GOOD, ts=NOW + 300), line(**GOOD, ts=NOW + 7200), line(**GOOD, ts=NOW - 7200)])
    assert parsed.predictions["fraud"].ts.tolist() == [NOW + 300, NOW - 7200]
    assert [(r.index, r.reason, r.detail) for r in parsed.rejects] == [
        (1, Reason.BAD_TIMESTAMP, "7200s ahead of the clock")]


def test_max_clock_skew_is_the_bound_on_both_paths():
    data, n = block([line(**GOOD, ts=NOW + 59), line(**GOOD, ts=NOW + 61)])
    for decoder in (None, BlockDecoder(DEFAULT_FIELDS, WANTED)):
        parsed = parse_predictions(data, n, DEFAULT_FIELDS, "fraud", resolve, NOW, 1e-3, decoder,
                                   max_skew_s=60.0)
        assert parsed.predictions["fraud"].ts.tolist() == [NOW + 59]
        assert reasons(parsed) == [Reason.BAD_TIMESTAMP]


BERLIN = ZoneInfo("Europe/Berlin")
# Summer time in Berlin ended on 2026-10-25 at 03:00 CEST (01:00 UTC): 02:00-03:00 came twice.
DST = [
    ("2026-10-24T12:00:00", utc(2026, 10, 24, 10, 0, 0)),  # CEST, +02:00
    ("2026-10-25T01:30:00", utc(2026, 10, 24, 23, 30, 0)),  # still CEST
    ("2026-10-25T02:30:00", utc(2026, 10, 25, 0, 30, 0)),  # ambiguous: the first (CEST)
    ("2026-10-25T03:30:00", utc(2026, 10, 25, 2, 30, 0)),  # CET, +01:00
    ("2026-10-26T12:00:00.250", utc(2026, 10, 26, 11, 0, 0, micro=250000)),
    ("2026-03-29T03:30:00", utc(2026, 3, 29, 1, 30, 0)),  # CEST began at 02:00 CET
    ("2026-10-25T03:30:00Z", utc(2026, 10, 25, 3, 30, 0)),  # an offset wins over the zone
    ("2026-10-25T03:30:00+05:00", utc(2026, 10, 24, 22, 30, 0)),
    (1793000000, 1793000000.0),  # Unix seconds have no zone
]


@pytest.mark.parametrize(("raw", "seconds"), DST, ids=[str(r) for r, _ in DST])
def test_times_without_an_offset_are_read_in_the_sources_zone_across_a_dst_change(raw, seconds):
    data, n = block([line(**GOOD, ts=raw)])
    for decoder in (None, BlockDecoder(DEFAULT_FIELDS, WANTED)):
        parsed = parse_predictions(data, n, DEFAULT_FIELDS, "fraud", resolve, NOW, 1e-3, decoder,
                                   zone=BERLIN)
        assert parsed.rejects == []
        assert parsed.predictions["fraud"].ts[0] == approx(seconds, abs=1e-6)
    labels = parse_labels(block([line(id="a", label=1, ts=raw)])[0], DEFAULT_FIELDS, "fraud", resolve,
                          NOW, zone=BERLIN).labels
    assert labels.ts[0] == approx(seconds, abs=1e-6)


def test_times_without_an_offset_default_to_utc(parse):
    parsed = parse([line(**GOOD, ts="2026-10-25T02:30:00")])
    assert parsed.predictions["fraud"].ts[0] == utc(2026, 10, 25, 2, 30, 0)


def test_a_huge_integer_in_a_field_nobody_reads_does_not_reject_the_line(parse):
    """json's int() refuses more than 4,300 digits; the fast path skips the field unread."""
    parsed = parse([b'{"probs": [0.25, 0.75], "note": ' + b"7" * 5000 + b"}"])
    assert parsed.rejects == []
    assert accepted(parsed).tolist() == [[0.25, 0.75]]


def test_an_empty_block_parses_to_nothing(parse):
    parsed = parse([])
    assert (parsed.predictions, parsed.rejects, parsed.blank) == ({}, [], 0)


def test_blank_lines_are_skipped_and_counted_not_rejected(parse):
    parsed = parse([b"", line(**GOOD), b"   ", b"\t", line(**GOOD)])
    assert parsed.rejects == []
    assert parsed.blank == 3
    assert parsed.predictions["fraud"].index.tolist() == [1, 4]


def test_a_line_ending_in_crlf_is_accepted(parse):
    parsed = parse([line(**GOOD) + b"\r"])
    assert parsed.rejects == []
    assert accepted(parsed).tolist() == [[0.25, 0.75]]


def test_vector_within_sum_tolerance_is_renormalised(parse):
    parsed = parse([line(probs=[0.2, 0.8009]), line(probs=[0.2, 0.7992]), line(probs=[0.2, 0.8011])])
    assert reasons(parsed) == [Reason.BAD_SUM]
    probs = accepted(parsed)
    assert probs.sum(axis=1) == approx([1.0, 1.0], abs=1e-15)
    assert probs[:, 1] / probs[:, 0] == approx([0.8009 / 0.2, 0.7992 / 0.2])


@FAST
@given(distributions(3, zeros=True), st.floats(-0.95, 0.95), st.sampled_from([1e-3, 1e-2, 0.1]))
def test_sum_tolerance_decides_between_renormalising_and_rejecting(p, fraction, tolerance):
    inside = p * (1 + fraction * tolerance)
    outside = p * (1 + math.copysign(1.05, fraction) * tolerance)
    data, n = block([line(model="three", probs=inside.tolist()), line(model="three", probs=outside.tolist())])
    parsed = parse_predictions(data, n, Fields(), None, resolve, NOW, tolerance)
    assert reasons(parsed) == [Reason.BAD_SUM]
    assert parsed.predictions["three"].probs[0] == approx(p, rel=1e-9, abs=1e-12)


def test_probs_as_an_object_keyed_by_class_name(parse):
    parsed = parse([line(probs={"fraud": 0.8, "legit": 0.2}), line(probs={"fraud": 1.0})])
    assert parsed.rejects == []
    assert accepted(parsed).tolist() == [[0.2, 0.8], [0.0, 1.0]]


def test_hard_prediction_by_index_or_name_is_one_hot(parse):
    parsed = parse([line(prediction=1), line(prediction="legit"), line(model="three", prediction="c")])
    assert parsed.rejects == []
    assert accepted(parsed).tolist() == [[0.0, 1.0], [1.0, 0.0]]
    assert parsed.predictions["three"].probs.tolist() == [[0.0, 0.0, 1.0]]


def test_labels_by_name_or_index_and_absent_or_null_as_unknown(parse):
    parsed = parse([line(**GOOD, label="fraud"), line(**GOOD, label=0), line(**GOOD, label=None),
                    line(**GOOD)])
    assert parsed.rejects == []
    assert parsed.predictions["fraud"].labels.tolist() == [1, 0, -1, -1]


def test_ids_are_kept_as_strings(parse):
    parsed = parse([line(**GOOD, id="r-81"), line(**GOOD, id=81), line(**GOOD)])
    assert parsed.predictions["fraud"].ids == ["r-81", "81", None]


def test_dotted_field_paths_read_nested_values(parse):
    fields = Fields(timestamp=("meta", "time"), model=("meta", "model"),
                    probabilities=("output", "scores"), label=("truth", "label"), id=("meta", "request"))
    lines = [
        line(meta={"time": 5.0, "model": "three", "request": "q1"},
             output={"scores": [0.1, 0.2, 0.7]}, truth={"label": "b"}),
        line(meta={"time": 6.0}, output={"scores": [0.5, 0.5]}),
        line(output={"probs": [0.5, 0.5]}),  # scores missing: no probabilities
        line(output=[0.5, 0.5]),  # not an object on the path
    ]
    parsed = parse(lines, fields=fields)
    three = parsed.predictions["three"]
    assert (three.ts.tolist(), three.labels.tolist(), three.ids) == ([5.0], [1], ["q1"])
    assert three.probs.tolist() == [[0.1, 0.2, 0.7]]
    assert parsed.predictions["fraud"].ts.tolist() == [6.0]
    assert reasons(parsed) == [Reason.MISSING_FIELD, Reason.MISSING_FIELD]


TIMESTAMPS = [
    ("2026-11-24T10:00:00Z", utc(2026, 11, 24, 10, 0, 0)),
    ("2026-11-24T10:00:00.123Z", utc(2026, 11, 24, 10, 0, 0, micro=123000)),
    ("2026-11-24T10:00:00.5Z", utc(2026, 11, 24, 10, 0, 0, micro=500000)),
    ("2026-11-24T10:00:00.123456789Z", utc(2026, 11, 24, 10, 0, 0, micro=123456)),
    ("2026-11-24t10:00:00z", utc(2026, 11, 24, 10, 0, 0)),
    ("2026-11-24T12:00:00+02:00", utc(2026, 11, 24, 10, 0, 0)),
    ("2026-11-24T04:30:00-05:30", utc(2026, 11, 24, 10, 0, 0)),
    ("2026-11-24T10:00:00.25+00:00", utc(2026, 11, 24, 10, 0, 0, micro=250000)),
    (1795514400, 1795514400.0),
    (1795514400.123, 1795514400.123),
]


@pytest.mark.parametrize(("raw", "seconds"), TIMESTAMPS, ids=[str(r) for r, _ in TIMESTAMPS])
def test_rfc3339_timestamps_with_z_and_offsets_and_unix_seconds(parse, raw, seconds):
    parsed = parse([line(**GOOD, ts=raw)])
    assert parsed.rejects == []
    assert parsed.predictions["fraud"].ts[0] == approx(seconds, abs=1e-6)


@pytest.mark.parametrize("digits", range(1, 10))
def test_rfc3339_fractional_seconds_of_any_length_are_accepted(digits):
    """RFC 3339 allows any number of fraction digits (loggers write 1 to 9), and
    datetime.fromisoformat before Python 3.11 takes only 3 or 6: pyproject says >=3.10."""
    text = "2026-11-24T10:00:00." + "123456789"[:digits] + "Z"
    assert parse_timestamp(text) == approx(utc(2026, 11, 24, 10, 0, 0) + float("0." + "123456789"[:digits]),
                                           abs=1e-6)


def test_missing_or_null_timestamp_uses_now(parse):
    parsed = parse([line(**GOOD), line(**GOOD, ts=None)])
    assert parsed.predictions["fraud"].ts.tolist() == [NOW, NOW]


def test_lines_are_split_by_model_in_arrival_order(parse):
    parsed = parse([line(model="three", probs=[0.2, 0.3, 0.5], ts=1), line(**GOOD, ts=2),
                    line(model="three", prediction=0, ts=3)])
    assert parsed.predictions["three"].index.tolist() == [0, 2]
    assert parsed.predictions["three"].ts.tolist() == [1.0, 3.0]
    assert parsed.predictions["fraud"].index.tolist() == [1]


def run_labels(lines: list[bytes], default_model: str | None = "fraud"):
    data, _ = block(lines)
    return parse_labels(data, Fields(), default_model, resolve, NOW)


def test_label_lines_by_name_or_index_with_their_time():
    parsed = run_labels([line(id="a", label="fraud", ts=5.0), line(id=7, label=0),
                         line(id="c", label="b", model="three", ts="2026-11-24T10:00:00Z")])
    assert parsed.rejects == []
    labels = parsed.labels
    assert labels.ids == ["a", "7", "c"]
    assert labels.model == ["fraud", "fraud", "three"]
    assert labels.labels.tolist() == [1, 0, 1]
    assert labels.ts.tolist() == [5.0, NOW, utc(2026, 11, 24, 10, 0, 0)]


LABEL_REJECTED = [
    (line(label=1), Reason.MISSING_FIELD),
    (line(id="a"), Reason.MISSING_FIELD),
    (line(id="a", label=None), Reason.MISSING_FIELD),
    (line(id="a", label="spam"), Reason.UNKNOWN_CLASS),
    (line(id="a", label=5), Reason.UNKNOWN_CLASS),
    (b'{"id": "a", "label": ' + HUGE + b"}", Reason.UNKNOWN_CLASS),
    (b'{"id": "a", "label": 1, "ts": -' + HUGE + b"}", Reason.BAD_TIMESTAMP),
    (line(id="a", label=1, ts="not a time"), Reason.BAD_TIMESTAMP),
    (line(id="a", label=1, ts=True), Reason.BAD_TIMESTAMP),
    (line(id=1.5, label=1), Reason.BAD_ID),
    (line(id="a", label=1, model=""), Reason.BAD_MODEL),
    (line(id="a", label=1, model="other"), Reason.UNKNOWN_MODEL),
    (b"{oops", Reason.NOT_JSON),
    (b"[]", Reason.NOT_OBJECT),
    (b'{"id": "\xff"}', Reason.NOT_UTF8),
]


@pytest.mark.parametrize(("bad", "reason"), LABEL_REJECTED, ids=[r.value for _, r in LABEL_REJECTED])
def test_each_bad_label_line_is_rejected_with_its_reason(bad, reason):
    parsed = run_labels([line(id="ok", label=1), bad, b""])
    assert [(r.index, r.reason) for r in parsed.rejects] == [(1, reason)]
    assert parsed.labels.ids == ["ok"]
    assert parsed.blank == 1


@FAST
@given(st.lists(st.one_of(
    st.builds(lambda p, t: line(model="three", probs=p.tolist(), ts=t), distributions(3), st.floats(0, 1e9)),
    st.sampled_from([b"", b"{", b"[]", line(probs=[2, 2]), line(probs=[0.5, 0.5], label=9),
                     line(model="other", probs=[1, 0])]),
), min_size=1, max_size=20))
def test_every_line_is_accepted_rejected_or_blank_exactly_once(lines):
    data, n = block(lines)
    for decoder in (None, BlockDecoder(Fields(), WANTED)):
        parsed = parse_predictions(data, n, Fields(), "fraud", resolve, NOW, 1e-3, decoder)
        accepted_index = [int(i) for p in parsed.predictions.values() for i in p.index]
        rejected_index = [r.index for r in parsed.rejects]
        assert len(accepted_index) + len(rejected_index) + parsed.blank == n
        assert not set(accepted_index) & set(rejected_index)
        assert rejected_index == sorted(rejected_index)
        assert parsed.blank == sum(1 for x in lines if not x.strip())
        for p in parsed.predictions.values():
            assert p.probs.sum(axis=1) == approx(np.ones(len(p.index)))
            assert [json.loads(lines[i]).get("model", "fraud") for i in p.index] == [p.model] * len(p.index)


def test_lines_of_a_model_not_yet_known_are_kept_and_the_model_reported_not_admitted():
    """The parser never admits: a new model's accepted lines come back under its name and
    the name in `new` (in order of first accepted line); admitting is the aggregator's."""
    known = Known({"fraud": CLASSES["fraud"]}, default=("a", "b", "c"))
    lines = [line(probs=[0.2, 0.3, 0.5], model="second"), line(probs=[0.5, 0.5]),
             line(probs=[0.5, 0.5], model="first"), line(probs=[0.1, 0.2, 0.7], model="first"),
             line(probs=[1.0, 0.0, 0.0], model="second")]
    for decoder in (None, BlockDecoder(DEFAULT_FIELDS, WANTED)):
        data, n = block(lines)
        parsed = parse_predictions(data, n, DEFAULT_FIELDS, "fraud", known, NOW, 1e-3, decoder)
        assert [(r.index, r.reason) for r in parsed.rejects] == [(2, Reason.WRONG_LENGTH)]
        assert parsed.new == ["second", "first"]
        assert parsed.predictions["second"].index.tolist() == [0, 4]
        assert parsed.predictions["first"].index.tolist() == [3]
        assert dict(known.models) == {"fraud": CLASSES["fraud"]}  # nothing was admitted


def test_a_label_source_with_its_own_model_knows_no_other_name():
    known = Known(CLASSES, default=("a", "b")).restricted("fraud")
    data, _ = block([line(id="a", label=1, model="three"), line(id="b", label=1, model="fraud"),
                     line(id="c", label=1, model="new")])
    parsed = parse_labels(data, DEFAULT_FIELDS, "fraud", known, NOW)
    assert [(r.index, r.reason) for r in parsed.rejects] == [(0, Reason.UNKNOWN_MODEL),
                                                             (2, Reason.UNKNOWN_MODEL)]
    assert parsed.labels.ids == ["b"] and parsed.new == []
    fed_by_any = parse_labels(data, DEFAULT_FIELDS, None, Known({}, default=("x", "y")), NOW)
    assert fed_by_any.new == ["three", "fraud", "new"] and not fed_by_any.rejects
