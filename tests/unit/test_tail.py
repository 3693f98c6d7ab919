"""tail.py's pure decisions: where complete lines end, file fingerprints, what happened to
a file since we read it. (parse.split turns such a block back into lines.)"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from monitor.parse import split
from monitor.tail import FINGERPRINT_BYTES, classify, complete_prefix, fingerprint_of

from .strategies import FAST

chunks = st.binary(max_size=200).map(lambda b: b.replace(b"\r", b""))
texts = st.lists(st.sampled_from([b"a", b"{}", b"\n", b" ", b"\xff", b"line"]), max_size=40).map(b"".join)


@FAST
@given(st.one_of(chunks, texts))
def test_complete_prefix_keeps_the_partial_last_line_out(data):
    n = complete_prefix(data)
    assert 0 <= n <= len(data)
    assert b"\n" not in data[n:]  # what is left is one partial line (or nothing)
    assert n == 0 or data[n - 1:n] == b"\n"


@FAST
@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=10),
       st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")))
def test_complete_lines_split_back_into_the_lines_written(lines, partial):
    data = b"".join(x + b"\n" for x in lines) + partial
    n = complete_prefix(data)
    assert split(data[:n]) == lines
    assert data[n:] == partial


def test_a_line_without_its_newline_waits():
    assert complete_prefix(b'{"probs": [0.5,') == 0
    assert complete_prefix(b'{"a": 1}\n{"probs": [0.5,') == len(b'{"a": 1}\n')
    assert complete_prefix(b"\n\n") == 2
    assert split(b"\n\n") == [b"", b""]


def test_an_empty_file_has_no_fingerprint_and_a_long_enough_one_has():
    assert fingerprint_of(b"") is None
    assert fingerprint_of(b"x" * FINGERPRINT_BYTES) is not None


@FAST
@given(st.binary(min_size=FINGERPRINT_BYTES, max_size=FINGERPRINT_BYTES), st.binary(max_size=50),
       st.binary(max_size=50), st.integers(0, FINGERPRINT_BYTES - 1))
def test_fingerprint_depends_on_exactly_the_first_bytes(head, tail_a, tail_b, flip):
    assert fingerprint_of(head + tail_a) == fingerprint_of(head + tail_b)
    changed = head[:flip] + bytes([head[flip] ^ 0x01]) + head[flip + 1:]
    assert fingerprint_of(changed) != fingerprint_of(head)


@FAST
@given(st.integers(0, 10**12), st.integers(0, 10**12))
def test_classify_compares_size_with_the_offset_read(offset, size):
    expected = "truncated" if size < offset else "grown" if size > offset else "same"
    assert classify(offset, size) == expected


def test_classify_examples():
    assert classify(100, 0) == "truncated"  # copytruncate
    assert classify(100, 100) == "same"
    assert classify(100, 150) == "grown"
    assert classify(0, 0) == "same"
