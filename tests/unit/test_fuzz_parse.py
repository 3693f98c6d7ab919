"""Fuzzing the line parsers: no line, however hostile, raises; every line is accepted,
rejected under exactly one reason, or blank; a hostile line never changes what its
neighbours contribute; and the fast (block decoder) and plain (json) paths agree.

Two generators: arbitrary bytes (with the fragments real damage is made of: NUL runs,
invalid and overlong UTF-8, BOMs, CRLF), and valid lines of the common shape with one
field mutated (huge integers, NaN/Infinity literals, deep nesting, duplicate keys,
long and quote- or newline-bearing names). The second one counts which path each line
took, so the property provably exercises both.
"""

from __future__ import annotations

import json
from collections import Counter
from unittest import mock

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest import approx

from monitor.core import parse as parse_module
from monitor.core.aggregate import Aggregator
from monitor.core.decode import BlockDecoder
from monitor.core.parse import Known, Reason, parse_labels, parse_predictions
from monitor.core.settings import Fields
from monitor.shell.config import build_config

CLASSES = {"fraud": ("legit", "fraud"), "three": ("a", "b", "c")}
# What the aggregator builds for a prediction source (aggregate.py, `_decoders`).
WANTED = ("timestamp", "model", "probabilities", "label", "id")
NOW = 1_800_000_000.0
FIELDS = Fields()
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


CATALOG = Known(CLASSES)

# -- raw JSON text of hostile values ---------------------------------------------------

HUGE = ["1" + "0" * 308, "1" + "0" * 400, "-" + "9" * 309, "7" * 5000, "18446744073709551616",
        "9223372036854775808", "-9223372036854775809", "1e999", "-1e999", "1e-999", "-0"]
LITERALS = ["NaN", "Infinity", "-Infinity", "nan", "inf", "true", "false", "null", "[]", "{}",
            "[[]]", '""', "0x10", "+1", "01", "1.", ".5"]
NESTED = ["[" * 5000 + "]" * 5000, '{"a":' * 2000 + "1" + "}" * 2000, "[" * 20_000,
          "[[0.5, 0.5]]", '[{"p": 0.5}, 0.5]', '{"legit": {"x": 1}}']
STRINGS = [json.dumps(s) for s in [
    "", "\x00" * 50, 'a"b', "a\nb", "a\\nb", "# HELP x\nfake_metric 1", "} 1\nx{", "\u2028",
    "m" * 200, "m" * 201, "m" * 20_000, "2026-11-24T10:00:00", "2026-11-24T10:00:00+14:00",
    "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "2026-02-30T00:00:00Z",
    "2026-11-24T10:00:00.1234567890123Z", "1e9", " 1795514400 ", "legit", "fraud", "zz",
]] + ['"\\ud800"', '"\\udfff\\ud800"', '"\\u0000"', '"unterminated', '"\\x41"']
# Each kind as likely as another, whatever the number of entries in it.
HOSTILE = st.sampled_from([HUGE, LITERALS, NESTED, STRINGS]).flatmap(st.sampled_from)
# Byte-level damage to a whole line.
INVALID_UTF8 = [b"\xff", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                b"\xc3", b"\x80"]
PREFIXES = [b"\x00" * 7, b"\xef\xbb\xbf", b"\xfe\xff", b" ", b"\t", b"\x1e"]
SUFFIXES = [b"\r", b"\r\r", b" ", b"\x00", b",", b"}", b" {}"]


def token(value: object) -> str:
    return json.dumps(value)


@st.composite
def valid_lines(draw: st.DrawFn) -> tuple[dict[str, str], dict]:
    """A line of the common shape, as its fields' JSON text, with what it must give."""
    model = draw(st.sampled_from(["fraud", "three", None]))
    classes = CLASSES[model or "fraud"]
    k = len(classes)
    weights = draw(st.lists(st.floats(0.01, 1.0), min_size=k, max_size=k))
    probs = [w / sum(weights) for w in weights]
    fields = {"probs": token(probs)}
    expected = {"model": model or "fraud", "probs": probs, "ts": NOW, "label": -1, "id": None}
    if model is not None:
        fields["model"] = token(model)
    ts = draw(st.one_of(st.none(), st.floats(1e9, NOW), st.integers(1_000_000_000, int(NOW))))
    if ts is not None:
        fields["ts"] = token(ts)
        expected["ts"] = float(ts)
    label = draw(st.one_of(st.none(), st.integers(0, k - 1)))
    if label is not None:
        by_name = draw(st.booleans())
        fields["label"] = token(classes[label] if by_name else label)
        expected["label"] = label
    request_id = draw(st.one_of(st.none(), st.text("abc-09", min_size=1, max_size=12)))
    if request_id is not None:
        fields["id"] = token(request_id)
        expected["id"] = request_id
    return fields, expected


def render(fields: dict[str, str]) -> bytes:
    text = "{" + ", ".join(f'"{key}": {value}' for key, value in fields.items()) + "}"
    return text.encode("utf-8", "surrogatepass")


@st.composite
def mutated_lines(draw: st.DrawFn) -> bytes:
    """A valid line with one thing wrong: a field's value, a duplicated or dropped key,
    or damage to its bytes."""
    fields, _ = draw(valid_lines())
    kind = draw(st.sampled_from(["value"] * 5 + ["duplicate", "drop", "bytes", "prefix", "suffix",
                                                 "truncate"]))
    key = draw(st.sampled_from(["ts", "model", "probs", "label", "id", "extra"]))
    if kind == "value":
        fields[key] = draw(HOSTILE)
        return render(fields)
    if kind == "duplicate":
        text = render(fields)
        return text[:-1] + f', "{key}": {draw(HOSTILE)}}}'.encode()
    if kind == "drop":
        fields.pop(key, None)
        return render(fields)
    text = render(fields)
    if kind == "bytes":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.sampled_from(INVALID_UTF8)) + text[at:]
    if kind == "prefix":
        return draw(st.sampled_from(PREFIXES)) + text
    if kind == "suffix":
        return text + draw(st.sampled_from(SUFFIXES))
    return text[: draw(st.integers(0, len(text) - 1))]


def accounted(parsed, n: int) -> dict[int, object]:
    """Line index -> its fate (a Reason, "blank", or the model it was accepted into);
    asserts that each line has exactly one."""
    fate: dict[int, object] = {}
    for model, p in parsed.predictions.items():
        for i in p.index.tolist():
            assert i not in fate
            fate[i] = model
    for reject in parsed.rejects:
        assert reject.index not in fate
        assert isinstance(reject.reason, Reason)
        fate[reject.index] = reject.reason
    assert len(fate) + parsed.blank == n
    return fate


def canonical(parsed) -> tuple:
    rejects = [(r.index, r.reason) for r in parsed.rejects]
    preds = {m: (p.index.tolist(), p.ts.tolist(), np.round(p.probs, 15).tolist(), p.labels.tolist(),
                 p.ids) for m, p in parsed.predictions.items()}
    return rejects, preds, parsed.blank


def both_paths(data: bytes, n: int, default_model: str | None = "fraud") -> tuple[object, list[int]]:
    """Parse through the fast path and the plain path; assert they agree; return the
    fast path's answer and the lines it handed to the plain path."""
    handed: list[int] = []
    real_plain = parse_module._plain

    def spy(lines, which, *args):
        handed.extend(which)
        return real_plain(lines, which, *args)

    with mock.patch.object(parse_module, "_plain", spy):
        fast = parse_predictions(data, n, FIELDS, default_model, CATALOG, NOW, 1e-3,
                                 BlockDecoder(FIELDS, WANTED))
    plain = parse_predictions(data, n, FIELDS, default_model, CATALOG, NOW, 1e-3)
    assert canonical(fast) == canonical(plain)
    return fast, handed


def check_rows(parsed) -> None:
    """What reaches aggregation is always a distribution with a sane time and label."""
    for model, p in parsed.predictions.items():
        k = len(CLASSES[model])
        assert p.probs.shape == (len(p.index), k)
        assert np.isfinite(p.probs).all() and (p.probs >= 0).all()
        assert np.allclose(p.probs.sum(axis=1), 1.0)
        assert np.isfinite(p.ts).all() and (p.ts >= 0).all()
        assert ((p.labels >= -1) & (p.labels < k)).all()
        assert all(x is None or isinstance(x, str) for x in p.ids)


def test_valid_lines_with_one_field_mutated_never_disturb_their_neighbours():
    taken = Counter()

    @FUZZ
    @given(st.lists(st.tuples(st.booleans(), valid_lines(), mutated_lines()), min_size=1, max_size=12))
    def run(rows):
        lines = [render(valid[0]) if keep else bad for keep, valid, bad in rows]
        data = b"".join(x + b"\n" for x in lines)
        fast, handed = both_paths(data, len(lines))
        fate = accounted(fast, len(lines))
        check_rows(fast)
        for i, (keep, (_, expected), _) in enumerate(rows):
            if keep:
                # An intact line keeps the fast path and its exact values, whatever is near it.
                assert i not in handed
                p = fast.predictions[expected["model"]]
                row = p.index.tolist().index(i)
                assert fate[i] == expected["model"]
                assert p.probs[row] == approx(expected["probs"], rel=1e-12)
                assert (p.ts[row], p.labels[row], p.ids[row]) == (
                    expected["ts"], expected["label"], expected["id"])
                taken["fast"] += 1
            else:
                taken["plain" if i in handed else "fast"] += 1
                taken["mutated rejected" if isinstance(fate.get(i), Reason) else "mutated other"] += 1

    run()
    # Both paths were reached, many times; most mutations are rejections.
    assert taken["fast"] > 500 and taken["plain"] > 300
    assert taken["mutated rejected"] > 300


FRAGMENTS = st.sampled_from([
    b"\x00" * 64, b"\xef\xbb\xbf", b"\r\n", b"\r", b"{", b"}", b"[", b"]", b'"', b":", b",",
    b'"probs": [0.5, 0.5]', b'"label": ' + b"9" * 400, b'"ts": NaN', b'"model": "fraud"',
    b'"id": "x"', *INVALID_UTF8, b"\n", b"Infinity", b"1e999",
])
RAW_BLOCKS = st.lists(st.one_of(st.binary(max_size=40), FRAGMENTS), max_size=40).map(
    lambda parts: b"".join(parts) + b"\n")


@FUZZ
@given(RAW_BLOCKS, st.sampled_from([None, "fraud"]))
def test_arbitrary_bytes_are_counted_once_each_and_never_raise(data, default_model):
    n = data.count(b"\n")
    fast, _ = both_paths(data, n, default_model)
    accounted(fast, n)
    check_rows(fast)


LABEL_BLOCKS = st.one_of(RAW_BLOCKS, st.lists(mutated_lines(), min_size=1, max_size=8).map(
    lambda lines: b"".join(x.replace(b"\n", b" ") + b"\n" for x in lines)))


@FUZZ
@given(LABEL_BLOCKS, st.sampled_from([None, "fraud"]))
def test_arbitrary_label_lines_are_counted_once_each_and_never_raise(data, default_model):
    n = data.count(b"\n")
    parsed = parse_labels(data, FIELDS, default_model, CATALOG, NOW)
    labels = parsed.labels
    accepted = labels.index.tolist()
    rejected = [r.index for r in parsed.rejects]
    assert len(set(accepted) | set(rejected)) == len(accepted) + len(rejected)
    assert len(accepted) + len(rejected) + parsed.blank == n
    assert all(isinstance(x, str) for x in labels.ids)
    assert np.isfinite(labels.ts).all()
    for model, label, raw in zip(labels.model, labels.labels.tolist(), labels.raw):
        if model is None:  # joins by id alone: the class is read against its prediction's model
            assert label == -1 and isinstance(raw, int | str) and not isinstance(raw, bool)
        else:
            assert 0 <= label < len(CLASSES[model]) and raw is None


AGGREGATOR_CONFIG = build_config({
    "sources": [{"name": "preds", "path": "/p"}],
    "labels": [{"name": "feedback", "path": "/l", "join_ttl": "1m", "max_pending": 5}],
    "models": {"fraud": {"classes": ["legit", "fraud"], "windows": ["5m", {"count": 3}]},
               "three": {"classes": ["a", "b", "c"], "windows": ["1m"]},
               "default": {"classes": ["x", "y"]}},
    "max_models": 4,
})


@FUZZ
@given(st.lists(st.tuples(st.booleans(), LABEL_BLOCKS, st.sampled_from([NOW, -np.inf])), max_size=6))
def test_hostile_blocks_through_the_aggregator_are_counted_once_each_and_never_raise(blocks):
    """Predictions and labels without a model (joined by id alone), in run and in replay."""
    aggregator = Aggregator(AGGREGATOR_CONFIG)
    expected = {"preds": 0, "feedback": 0}
    for is_label, data, now in blocks:
        n = data.count(b"\n")
        if is_label:
            aggregator.ingest_labels(AGGREGATOR_CONFIG.labels[0], data, n, NOW, NOW)
            expected["feedback"] += n
        else:
            aggregator.ingest_predictions(AGGREGATOR_CONFIG.sources[0], data, n, now, NOW)
            expected["preds"] += n
    for name, counters in aggregator.counters.items():
        blank = expected[name] - sum(counters.lines.values())
        assert blank >= 0 and sum(counters.rejected.values()) == counters.lines["rejected"]
    for model in aggregator.advance(NOW).snapshot().models:
        assert np.isfinite(model.probability_total).all()
        assert model.labels_total.sum() <= model.predictions_total
