"""Stored rows decode to what was encoded, one by one or many at once; anything else is a
CorruptEntry, never a client error. (Every dtype and shape through both stores: test_stores.py.)"""
from __future__ import annotations

import struct

import ml_dtypes
import numpy as np
import pytest

from serving.precomputed.api import CorruptEntry, StoreError
from serving.precomputed.codec import MAGIC, decode_rows, encode_rows


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name, values in want.items():
        assert got[name].dtype == values.dtype and got[name].shape == values.shape, name
        assert got[name].tolist() == values.tolist(), name


def test_output_order_survives():
    names = ["z", "b", "m", "a", "y"]
    decoded = decode_rows(encode_rows({name: np.float32([i]) for i, name in enumerate(names)}))
    assert list(decoded) == names
    assert [float(v[0]) for v in decoded.values()] == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32, np.float64, np.complex64,
                                   np.int8, np.uint16, np.int32, np.uint64, np.bool_, ">i4", ">f8"])
def test_numeric_rows_read_at_once_equal_rows_read_one_by_one(dtype):
    outputs = {"scores": (np.arange(5 * 3 * 2) - 7).astype(dtype).reshape(5, 3, 2),
               "label": np.arange(5, dtype=np.int64)}
    stored = encode_rows(outputs)
    want = {name: value.astype(value.dtype.newbyteorder("=")) for name, value in outputs.items()}
    assert_same(decode_rows(stored), want)  # one join, one frombuffer
    for i, value in enumerate(stored):
        assert_same(decode_rows([value]), {name: v[i:i + 1] for name, v in want.items()})


def test_strings_bytes_and_empty_shapes_round_trip():
    outputs = {"text": np.array([[b"caf\xc3\xa9", b"\xff"], [b"", b"z"]], dtype=object),
               "word": np.array(["a", "\u00e9"], dtype=object),
               "empty": np.zeros((2, 0, 3), np.float32)}
    got = decode_rows(encode_rows(outputs))
    assert_same(got, {**outputs, "word": np.array([b"a", b"\xc3\xa9"], dtype=object)})


def test_rows_from_different_headers_are_stacked_when_they_fit():
    """Rows written by two runs whose outputs came in another order still read as one batch."""
    first = encode_rows({"a": np.float32([1]), "b": np.int64([2])})
    second = encode_rows({"b": np.int64([4]), "a": np.float32([3])})
    assert_same(decode_rows(first + second), {"a": np.float32([1, 3]), "b": np.int64([2, 4])})


@pytest.mark.parametrize("rows", [
    [{"a": np.float32([[1, 2]])}, {"a": np.float32([[1, 2, 3]])}],
    [{"a": np.float32([1])}, {"b": np.float32([1])}],
    [{"a": np.float32([1])}, {"a": np.float32([1]), "b": np.float32([1])}],
    [{"t": np.array([[b"x"]], dtype=object)}, {"t": np.array([[b"x", b"y"]], dtype=object)}],
], ids=["other-shape", "other-output", "extra-output", "strings-other-shape"])
def test_rows_that_do_not_stack_are_a_corrupt_entry(rows):
    with pytest.raises(CorruptEntry):
        decode_rows([value for row in rows for value in encode_rows(row)])


def header(name: bytes = b"x", code: bytes = b"float32", dims: tuple[int, ...] = (2,), count: int = 1) -> bytes:
    return (MAGIC + struct.pack("<H", count) + struct.pack("<H", len(name)) + name + bytes([len(code)])
            + code + bytes([len(dims)]) + struct.pack(f"<{len(dims)}I", *dims))


GOOD = header() + np.float32([1, 2]).tobytes()


@pytest.mark.parametrize("data", [
    b"\xff\xff\xff", b"", GOOD[:-1], GOOD + b"\0", GOOD[:len(MAGIC) + 3],
    header(code=b"object") + b"\0" * 8, header(code=b"V8") + b"\0" * 8,
    header(name=b"\xff") + np.float32([1, 2]).tobytes(),
    header(dims=(2**32 - 1, 2**32 - 1, 2**32 - 1)) + b"\0" * 8,  # claims exabytes: no allocation
    header(code=b"string", dims=(2**32 - 1,)) + struct.pack("<I", 1) + b"x",
    header(code=b"string", dims=(1,)) + struct.pack("<I", 99) + b"x",
    header(count=2) + b"\x01\x00x\x07float32\x01\x02\x00\x00\x00" + b"\0" * 16,
], ids=["not-a-row", "empty", "cut-short", "trailing-bytes", "cut-in-header", "object-dtype",
        "unknown-dtype", "name-not-utf8", "huge-dims", "too-many-strings", "string-past-end",
        "one-output-twice"])
def test_what_does_not_decode_is_a_corrupt_entry(data):
    with pytest.raises(CorruptEntry) as caught:
        decode_rows([data])
    assert isinstance(caught.value, StoreError)  # readers fall back on any StoreError
    with pytest.raises(CorruptEntry):
        decode_rows([GOOD, data])  # second row bad: the batch falls back too


@pytest.mark.parametrize("outputs", [
    {"x": np.float32(1)}, {"x": np.float32([1]), "y": np.float32([1, 2])},
    {"x": np.array([None], dtype=object)}, {"x": np.array(["a"], dtype="U1")},
], ids=["no-batch-dimension", "rows-differ", "object-not-bytes", "unicode-array"])
def test_outputs_that_cannot_be_stored_are_refused_when_writing(outputs):
    with pytest.raises(ValueError):
        encode_rows(outputs)
