"""tail.py's pure decisions: where complete lines end, file fingerprints, what happened to
a file since we read it, which record a file continues, copy or original, and where a
copy continues. (parse.split turns such a block back into lines.)"""

from __future__ import annotations

import gzip

from hypothesis import assume, given
from hypothesis import strategies as st

from monitor.core.parse import split
from monitor.shell.stream import (
    FINGERPRINT_BYTES,
    TRANSITIONS,
    Event,
    FileRecord,
    State,
    Stream,
    complete_prefix,
    fingerprint_of,
    is_compressed,
    strip_holes,
)
from monitor.shell.tail import claim, classify, copy_of, copy_resume, still_copy

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
@given(st.integers(0, 10**12), st.integers(1, 10**12))
def test_classify_any_shrink_is_a_truncation_and_any_growth_is_growth(offset, delta):
    assert classify(offset + delta, offset) == "truncated"
    assert classify(offset, offset + delta) == "grown"
    assert classify(offset, offset) == "same"


def test_classify_examples():
    assert classify(100, 0) == "truncated"  # copytruncate
    assert classify(100, 100) == "same"
    assert classify(100, 150) == "grown"
    assert classify(0, 0) == "same"


heads = st.binary(min_size=FINGERPRINT_BYTES, max_size=FINGERPRINT_BYTES + 40)


@FAST
@given(st.integers(0, 10**9), st.booleans(), st.integers(0, 10**9))
def test_a_copy_continues_at_the_original_offset_but_never_beyond_what_it_holds(
        offset, skipping, size):
    start, skip = copy_resume(offset, skipping, size)
    assert start == min(offset, size)  # never past its end: that would look like a cut
    assert skip == (skipping and size >= offset)


def test_a_copy_taken_before_the_last_line_read_has_nothing_new():
    # Issue 11: 1,000 lines copied (76,680 bytes), a 1,001st read from the original.
    assert copy_resume(76758, False, 76680) == (76680, False)
    assert copy_resume(76758, False, 80000) == (76758, False)  # copied later: the rest is new


@FAST
@given(heads, st.integers(1, FINGERPRINT_BYTES))
def test_a_prefix_of_the_original_is_its_copy_in_the_making(original, n):
    assert copy_of(None, original[:FINGERPRINT_BYTES], original[:n])


@FAST
@given(heads, heads)
def test_a_copy_of_what_was_consumed_is_recognised_after_the_original_was_cut(consumed, now):
    fp = fingerprint_of(consumed)
    assert copy_of(fp, b"", consumed)  # the original is empty now
    other = bytes([consumed[0] ^ 1]) + consumed[1:]
    assume(not now.startswith(other[:FINGERPRINT_BYTES]))
    assert not copy_of(fp, now[:FINGERPRINT_BYTES], other)  # other content: a new file


@FAST
@given(st.binary(min_size=1, max_size=FINGERPRINT_BYTES + 40), st.binary(max_size=100),
       st.integers(0, FINGERPRINT_BYTES - 1))
def test_at_the_cut_a_held_file_takes_over_only_if_it_may_be_a_copy_of_what_was_read(
        consumed, more, flip):
    assume(not is_compressed(consumed) and not is_compressed(more))  # text, as logs are
    fp = fingerprint_of(consumed[:FINGERPRINT_BYTES])
    assert still_copy(fp, consumed + more)  # the copy, or one with lines we had not read
    assert still_copy(fp, consumed[:len(consumed) // 2])  # taken before our last read
    assert still_copy(None, more)  # nothing read yet: all of it is new anyway
    i = flip % len(consumed)
    other = consumed[:i] + bytes([consumed[i] ^ 1]) + consumed[i + 1:]
    assert not still_copy(fp, other + more)  # as long, and other bytes: not its copy
    assert not still_copy(fp, gzip.compress(consumed))
    assert not still_copy(None, gzip.compress(more))


def test_a_compressed_rotation_shorter_than_the_text_it_was_made_of_takes_over_nothing():
    text = b'{"seq": 1, "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}\n' * 50
    packed = gzip.compress(text)
    assert len(packed) < FINGERPRINT_BYTES  # shorter: as a plain short copy, it would
    assert not still_copy(fingerprint_of(text[:FINGERPRINT_BYTES]), packed)


def _record(key: tuple[int, int], head: bytes | None, offset: int = 100) -> FileRecord:
    return FileRecord(key[0], key[1], None if head is None else fingerprint_of(head), "p",
                      offset, 1)


keys = st.tuples(st.integers(1, 3), st.integers(1, 5))


@FAST
@given(st.lists(st.tuples(keys, st.one_of(st.none(), heads)), max_size=6), keys, heads)
def test_a_file_claims_its_own_inode_first_then_a_full_fingerprint_else_nothing(
        saved, key, head):
    records = [_record(k, h) for k, h in saved]
    index = claim(records, key, head)
    own = [i for i, r in enumerate(records)
           if r.key == key and (r.fingerprint is None or fingerprint_of(head) == r.fingerprint)]
    by_content = [i for i, r in enumerate(records) if r.fingerprint == fingerprint_of(head)]
    if own:
        assert index == own[0]
    elif by_content:
        assert index == by_content[0]
    else:
        assert index is None


def test_a_reused_inode_with_other_content_is_a_new_file():
    old = _record((1, 7), b"a" * FINGERPRINT_BYTES)
    assert claim([old], (1, 7), b"b" * FINGERPRINT_BYTES) is None
    assert claim([old], (1, 8), b"a" * FINGERPRINT_BYTES) == 0  # its copy
    short = _record((1, 7), b"a" * 10)  # too short a head to tell a copy from a look-alike
    assert claim([short], (1, 8), b"a" * FINGERPRINT_BYTES) is None
    assert claim([short], (1, 7), b"a" * FINGERPRINT_BYTES) == 0


@FAST
@given(st.lists(st.tuples(st.integers(0, 40), st.binary(max_size=20).map(
    lambda b: b.replace(b"\n", b"").lstrip(b"\0"))), max_size=8))
def test_nul_runs_before_lines_are_dropped_and_the_lines_kept(holes_and_lines):
    data = b"".join(b"\0" * n + line + b"\n" for n, line in holes_and_lines)
    assert split(strip_holes(data)) == [line for _, line in holes_and_lines]


def test_a_nul_inside_a_line_is_the_line_s_own():
    assert strip_holes(b'{"a": "x\0y"}\n\0\0{"b": 1}\n') == b'{"a": "x\0y"}\n{"b": 1}\n'


def test_every_state_has_a_next_state_for_every_event():
    assert set(TRANSITIONS) == {(s, e) for s in State for e in Event}


def _walk(events: list[Event]) -> Stream:
    stream = Stream(FileRecord(1, 2, None, "p", 0, 0), fd=-1, size=0, max_line_bytes=10)
    for now, event in enumerate(events, 1):
        stream.to(event, float(now), original=(1, 9) if event is Event.HOLD else None)
    return stream


def test_a_file_renamed_away_is_gone_from_then_and_followed_again_when_seen():
    stream = _walk([Event.SEEN, Event.MISSED, Event.MISSED])
    assert stream.state is State.GONE and stream.since == 2.0  # left the glob at 2
    stream = _walk([Event.SEEN, Event.MISSED, Event.SEEN])
    assert stream.state is State.FOLLOWED and stream.since is None


def test_a_held_copy_keeps_its_original_and_whether_it_is_on_the_glob():
    stream = _walk([Event.HOLD, Event.SEEN, Event.MISSED])
    assert stream.state is State.HELD_GONE and stream.held and stream.original == (1, 9)
    assert stream.since == 3.0
    stream.to(Event.RELEASE, 4.0)  # its original was cut: read from here, to its end
    assert stream.state is State.GONE and not stream.held and stream.original is None
    assert stream.since == 3.0
    stream = _walk([Event.HOLD, Event.RELEASE])
    assert stream.state is State.FOLLOWED and stream.original is None and stream.since is None


@FAST
@given(st.lists(st.sampled_from(list(Event)), max_size=20))
def test_held_and_off_glob_follow_the_last_event_that_decides_each(events):
    stream = _walk(events)
    holds = [e for e in events if e in (Event.HOLD, Event.RELEASE)]
    scans = [e for e in events if e in (Event.SEEN, Event.MISSED)]
    assert stream.held == (bool(holds) and holds[-1] is Event.HOLD)
    gone = bool(scans) and scans[-1] is Event.MISSED
    assert (stream.state in (State.GONE, State.HELD_GONE)) == gone
    assert (stream.original is not None) == stream.held
    # The quiet clock runs only off the glob, from the scan that first missed it.
    if gone:
        first_missed = len(events) - next(i for i, e in enumerate(reversed(events))
                                          if e is Event.SEEN) if Event.SEEN in events else 0
        missed_at = next(i for i, e in enumerate(events[first_missed:], first_missed + 1)
                         if e is Event.MISSED)
        assert stream.since == float(missed_at)
    elif stream.held:
        assert stream.since is None
