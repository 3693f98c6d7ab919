"""checkpoint.py encode/decode (bytes in memory only): round trip, and every damaged or
foreign input is a CheckpointError (the daemon moves such a file aside and starts fresh;
any other exception would stop it at start-up)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.shell.checkpoint import VERSION, CheckpointError, decode, encode

from .strategies import FAST

META = {"aggregator": {"models": [{"name": "fraud", "classes": ["legit", "fraud"]}],
                       "duplicates": {"feedback": 3}},
        "tail": {"files": [{"path": "/var/log/p.jsonl", "offset": 1234}]}}
ARRAYS = {
    "m0.clock": np.array([1.7e9, 1.7e9 + 1]),
    "m0.labels_total": np.array([5, 7], dtype=np.int64),
    "m0.window.5m.sums": np.arange(42.0).reshape(6, 7),
    "j0.waiting_ids": np.frombuffer(b'["r-1", "r-2"]', dtype=np.uint8),
    "m0.window.count:3.labels": np.array([-1, 0, 1], dtype=np.int32),
    "empty": np.zeros((0, 3)),
}


def assert_round_trip(meta: dict, arrays: dict) -> None:
    got_meta, got_arrays = decode(encode(meta, arrays))
    assert got_meta == {"version": VERSION, "arrays": sorted(arrays), **meta}
    assert got_arrays.keys() == arrays.keys()
    for name, array in arrays.items():
        assert got_arrays[name].dtype == array.dtype, name
        assert got_arrays[name].shape == array.shape, name
        np.testing.assert_array_equal(got_arrays[name], array)


def test_round_trip_of_meta_and_named_arrays():
    assert_round_trip(META, ARRAYS)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)
array_strategy = st.one_of(
    st.lists(st.floats(allow_nan=False), max_size=20).map(lambda xs: np.array(xs, dtype=np.float64)),
    st.lists(st.integers(-2**63, 2**63 - 1), max_size=20).map(lambda xs: np.array(xs, dtype=np.int64)),
    st.binary(max_size=40).map(lambda b: np.frombuffer(b, dtype=np.uint8)),
    st.integers(0, 5).flatmap(lambda k: st.lists(st.floats(0, 1), min_size=2 * k, max_size=2 * k).map(
        lambda xs, k=k: np.array(xs, dtype=np.float64).reshape(2, k))),
)


@FAST
@given(st.dictionaries(st.text(min_size=1, max_size=10).filter(lambda key: key not in ("version", "arrays")),
                       json_values, max_size=5),
       st.dictionaries(st.from_regex(r"[a-z][a-z0-9.:]{0,15}", fullmatch=True).map(lambda key: "a." + key),
                       array_strategy, max_size=6))
def test_round_trip_of_any_json_meta_and_arrays(meta, arrays):
    assert_round_trip(meta, arrays)


def test_every_truncation_is_a_checkpoint_error():
    data = encode(META, ARRAYS)
    for n in range(len(data)):
        with pytest.raises(CheckpointError):
            decode(data[:n])


def test_every_single_byte_corruption_is_an_error_or_harmless():
    """A flipped byte either leaves the content intact (zip fields nobody reads) or is a
    CheckpointError: never another exception, never different content."""
    data = encode(META, ARRAYS)
    escaped = []
    for i in range(len(data)):
        for mask in (0x01, 0x80):
            damaged = bytearray(data)
            damaged[i] ^= mask
            try:
                meta, arrays = decode(bytes(damaged))
            except CheckpointError:
                continue
            except Exception as exc:  # the point: which exception escapes
                escaped.append((i, mask, type(exc).__name__, str(exc)[:60]))
                continue
            expected = {"version": VERSION, "arrays": sorted(ARRAYS), **META}
            same = meta == expected and arrays.keys() == ARRAYS.keys() and all(
                np.array_equal(arrays[k], ARRAYS[k]) for k in ARRAYS)
            if not same:
                escaped.append((i, mask, "decoded to different content", sorted(arrays)))
    assert escaped == []


@FAST
@given(st.binary(max_size=300))
def test_garbage_bytes_are_a_checkpoint_error(data):
    with pytest.raises(CheckpointError):
        decode(data)


@FAST
@given(st.binary(max_size=300))
def test_garbage_behind_a_zip_signature_is_a_checkpoint_error(data):
    with pytest.raises(CheckpointError):
        decode(b"PK\x03\x04" + data)


def npz(**members: np.ndarray) -> bytes:
    """An npz body behind the magic line, to reach the inner checks."""
    from monitor.shell.checkpoint import MAGIC

    buf = io.BytesIO()
    np.savez(buf, **members)
    return MAGIC + buf.getvalue()


def test_a_bare_npz_without_the_envelope_is_a_checkpoint_error():
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros(2))
    with pytest.raises(CheckpointError, match="not a drift-monitor checkpoint"):
        decode(buf.getvalue())


def meta_member(text: bytes) -> np.ndarray:
    return np.frombuffer(text, dtype=np.uint8)


@pytest.mark.parametrize("version", [0, VERSION + 1, "1", None])
def test_another_version_is_a_checkpoint_error(version):
    import json

    data = npz(__meta__=meta_member(json.dumps({"version": version}).encode()), x=np.zeros(2))
    with pytest.raises(CheckpointError, match="version"):
        decode(data)


def test_a_checkpoint_without_version_is_a_checkpoint_error():
    with pytest.raises(CheckpointError):
        decode(npz(__meta__=meta_member(b"{}")))


def test_an_npz_without_metadata_is_a_checkpoint_error():
    with pytest.raises(CheckpointError):
        decode(npz(x=np.zeros(3)))


@pytest.mark.parametrize("meta", [b"[1]", b'"text"', b"null", b"\xff\xfe", b"{"])
def test_metadata_that_is_not_a_json_object_is_a_checkpoint_error(meta):
    with pytest.raises(CheckpointError):
        decode(npz(__meta__=meta_member(meta)))


def test_a_plain_npy_file_is_a_checkpoint_error():
    buf = io.BytesIO()
    np.save(buf, np.arange(3))
    with pytest.raises(CheckpointError):
        decode(buf.getvalue())


def test_pickled_objects_are_refused_not_loaded():
    data = npz(__meta__=meta_member(b'{"version": %d}' % VERSION), evil=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError):
        decode(data)


def with_member(name: str, payload: bytes, compress: int = 0) -> bytes:
    """A real checkpoint with one more zip member (named in the metadata's list)."""
    import json
    import zipfile

    from monitor.shell.checkpoint import MAGIC

    buf = io.BytesIO()
    meta = {"version": VERSION, "arrays": [name]}
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("__meta__.npy", _npy(np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)))
        z.writestr(f"{name}.npy", payload, compress_type=compress)
    return MAGIC + buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def test_an_array_header_declaring_56_tib_is_refused_before_anything_is_allocated():
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (7 * 2**40,)})
    with pytest.raises(CheckpointError, match="declares"):
        decode(with_member("big", header.getvalue() + b"\0" * 64))


def test_an_array_larger_than_the_config_can_need_is_refused_unread():
    data = with_member("x", _npy(np.zeros(1000)))
    assert decode(data, budget=10_000)[1]["x"].shape == (1000,)
    with pytest.raises(CheckpointError, match="more than this config can need"):
        decode(data, budget=4_000)


def test_a_deflated_member_is_refused_so_nothing_can_inflate():
    import zipfile

    bomb = _npy(np.zeros(1 << 20, dtype=np.uint8))  # 1 MiB of zeros deflates to ~1 KiB
    with pytest.raises(CheckpointError, match="compressed"):
        decode(with_member("bomb", bomb, zipfile.ZIP_DEFLATED))
