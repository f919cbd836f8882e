"""serving/v2/raw.py and serving/v2/shapes.py: every datatype's binary form round-trips
and is byte for byte what tritonclient sends and reads; wrong sizes, bad shapes and bad
BYTES length prefixes are InvalidArgument naming the input (and the byte offset); limits
are PayloadTooLarge. (Random and adversarial inputs: ``test_raw_fuzz.py``.)"""
from __future__ import annotations

import struct

import ml_dtypes
import numpy as np
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from serving.errors import InvalidArgument, PayloadTooLarge, ServingError
from serving.runtime.shapes import TensorLimits
from serving.runtime.signature import TensorSpec
from serving.v2 import protos, raw, shapes
from serving.v2.datatypes import BOOL, BY_NAME, BYTES, DATATYPES, Datatype


def _values(dt: Datatype) -> np.ndarray:
    """Six values of ``dt`` that exercise its edges, as a [2, 3] array."""
    if dt is BYTES:
        values = [b"", b"\xff\xfe\x00 not UTF-8", b"ascii", b"\x00\x00\x00\x00", "é".encode(), b"x" * 70_000]
        array = np.empty(6, object)
        array[:] = values
        return array.reshape(2, 3)
    if dt is BOOL:
        return np.array([[True, False, True], [False, False, True]])
    if dt.dtype.kind in "iu":
        info = np.iinfo(dt.dtype)
        return np.array([info.min, info.max, 0, 1, info.max - 1, info.min // 2 + 7], dt.dtype).reshape(2, 3)
    tiny = {"FP16": 6e-8, "BF16": 1e-40, "FP32": 1e-45, "FP64": 5e-324}[dt.name]  # subnormals
    return np.array([-0.0, np.inf, np.nan, tiny, -2.5, float(ml_dtypes.finfo(dt.dtype).max)], dt.dtype).reshape(2, 3)


def _tritonclients_bytes(array: np.ndarray, dt: Datatype) -> bytes:
    """What ``InferInput.set_data_from_numpy(binary_data=True)`` sends (``utils``' serializer for
    BYTES, the array's own bytes otherwise: this machine is little-endian)."""
    return serialize_byte_tensor(array).item() if dt is BYTES else array.tobytes()


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype, shape and elements, bit for bit (NaN payloads and -0.0 included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == object:
        return a.tolist() == b.tolist() and all(type(v) is bytes for v in b.ravel())
    return a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dt", DATATYPES, ids=lambda dt: dt.name)
@pytest.mark.parametrize("shape", [(2, 3), (6,), (3, 1, 2), ()], ids=str)
def test_each_datatype_round_trips_as_tritonclient_sends_it(dt, shape):
    array = _values(dt).reshape(-1)[: max(1, int(np.prod(shape)))].reshape(shape)
    data = _tritonclients_bytes(array, dt)
    assert raw.encode(array, dt) == data
    decoded = raw.decode(data, dt, list(shape), "x")
    assert _same(decoded, array)
    assert decoded.flags.writeable and decoded.flags.c_contiguous


@pytest.mark.parametrize("dt", DATATYPES, ids=lambda dt: dt.name)
def test_empty_tensors_round_trip(dt):
    for shape in ([0], [0, 3], [4, 0, 2]):
        decoded = raw.decode(b"", dt, shape, "x")
        assert decoded.shape == tuple(shape) and decoded.dtype == dt.dtype
        assert raw.encode(decoded, dt) == b""


def test_tritonclient_reads_what_we_encode():
    strings = _values(BYTES)
    assert deserialize_bytes_tensor(raw.encode(strings, BYTES)).tolist() == strings.ravel().tolist()


def test_bf16_is_the_high_half_of_float32():
    """Triton's layout (``serialize_bf16_tensor`` of older tritonclients): for values bfloat16
    holds exactly, the top two bytes of each little-endian float32."""
    values = np.array([1.0, -2.5, 2.0**127, 2.0**-130, np.inf, 0.0], np.float32)
    high = (values.view("<u4") >> 16).astype("<u2").tobytes()
    assert raw.encode(values.astype(ml_dtypes.bfloat16), BY_NAME["BF16"]) == high
    np.testing.assert_array_equal(raw.decode(high, BY_NAME["BF16"], [6], "x").astype(np.float32), values)


def test_bytes_elements_are_length_prefixed_little_endian():
    array = np.array([b"ab", b"", b"\xff"], object)
    assert raw.encode(array, BYTES) == b"\x02\x00\x00\x00ab" + b"\x00" * 4 + b"\x01\x00\x00\x00\xff"
    assert raw.encode(np.array(["é"], object), BYTES) == b"\x02\x00\x00\x00\xc3\xa9"  # str as UTF-8


def test_encoding_is_row_major_whatever_the_arrays_layout():
    array = np.arange(12, dtype=np.int32).reshape(3, 4)
    assert raw.encode(np.asfortranarray(array), BY_NAME["INT32"]) == array.tobytes()
    assert raw.encode(array[:, ::2], BY_NAME["INT32"]) == np.ascontiguousarray(array[:, ::2]).tobytes()
    strings = np.array([[b"a", b"b"], [b"c", b"d"]], object)
    assert raw.encode(strings.T, BYTES) == serialize_byte_tensor(np.ascontiguousarray(strings.T)).item()


def test_decoding_copies_out_of_the_buffer_and_reads_slices_of_it():
    body = bytearray(b"JSON" + np.arange(4, dtype="<f4").tobytes() + b"\x01\x00\x00\x00z")
    view = memoryview(body)
    floats = raw.decode(view[4:20], BY_NAME["FP32"], [2, 2], "x")
    strings = raw.decode(view[20:], BYTES, [1], "s")
    body[4:20] = b"\xff" * 16
    body[-1:] = b"!"
    np.testing.assert_array_equal(floats, [[0, 1], [2, 3]])
    assert strings.tolist() == [b"z"] and type(strings[0]) is bytes


@pytest.mark.parametrize("dt", [dt for dt in DATATYPES if dt is not BYTES], ids=lambda dt: dt.name)
def test_fixed_size_data_of_the_wrong_size_is_refused_naming_the_input(dt):
    need = 6 * dt.itemsize
    for size in (0, need - 1, need + 1, 2 * need):
        with pytest.raises(InvalidArgument) as raised:
            raw.decode(b"\x00" * size, dt, [2, 3], "pixels")
        assert raised.value.message == (f"Input 'pixels' has {size} bytes of binary data; shape [2,3] of "
                                        f"{dt.name} needs {need}")
        assert type(raised.value) is InvalidArgument


def test_bool_bytes_must_be_0_or_1():
    assert raw.decode(b"\x00\x01", BOOL, [2], "x").tolist() == [False, True]
    with pytest.raises(InvalidArgument, match="Input 'x': a BOOL element is a byte 0 or 1"):
        raw.decode(b"\x00\x02", BOOL, [2], "x")


def _prefixed(*lengths_and_bytes: int | bytes) -> bytes:
    return b"".join(struct.pack("<I", p) if isinstance(p, int) else p for p in lengths_and_bytes)


BAD_BYTES = [
    ("fewer than 4 bytes an element", b"\x00" * 8, [3], "8 bytes of binary data, too few for 3 BYTES elements"),
    ("2**31 elements in 4 bytes", _prefixed(0), [2**31], "too few for 2147483648 BYTES elements"),
    ("a length past the end", _prefixed(10, b"abc"), [1], "element 0 at byte 0 claims 10 bytes, past the end"),
    ("the largest length", _prefixed(2**32 - 1, b"abc"), [1], "claims 4294967295 bytes, past the end of its 7"),
    ("second length past the end", _prefixed(1, b"a", 5, b"abcd"), [2], "element 1 at byte 5 claims 5 bytes"),
    ("a length cut short", _prefixed(1, b"a", b"\x00\x00\x00"), [2], "element 1's length at byte 5 runs past"),
    ("bytes left over", _prefixed(1, b"ab"), [1], "1 bytes left over at byte 5, after its 1 BYTES elements"),
    ("bytes for no elements", b"\x00", [0], "1 bytes left over at byte 0, after its 0 BYTES elements"),
    ("elements left over", _prefixed(0, 0, 0), [2], "4 bytes left over at byte 8"),
]


@pytest.mark.parametrize("data,shape,message", [c[1:] for c in BAD_BYTES], ids=[c[0] for c in BAD_BYTES])
def test_bad_bytes_data_is_refused_with_its_offset(data, shape, message):
    with pytest.raises(InvalidArgument, match="^Input 'text'") as raised:
        raw.decode(data, BYTES, shape, "text")
    assert message in raised.value.message


BAD_SHAPES = [
    ("negative", [-1], InvalidArgument, "negative dimension"),
    ("overflowing", [2**40, 2**40], InvalidArgument, "overflows"),
    ("overflowing beside a zero", [0, 2**62, 2**62], InvalidArgument, "overflows"),
    ("beyond int64", [2**64], InvalidArgument, "overflows"),
    ("65 dimensions", [1] * 65, InvalidArgument, "65 dimensions; the most is 64"),
    ("a million dimensions", [1] * 10**6, InvalidArgument, "1000000 dimensions"),
    ("a boolean", [True], InvalidArgument, "must be a list of integers, got a bool"),
    ("a float", [2.0], InvalidArgument, "got a float"),
    ("a string dim", ["2"], InvalidArgument, "got a str"),
    ("nested", [[2]], InvalidArgument, "got a list"),
    ("a string", "22", InvalidArgument, "got str"),
    ("a number", 2, InvalidArgument, "got int"),
    ("absent", None, InvalidArgument, "got NoneType"),
    ("an object", {"0": 2}, InvalidArgument, "got dict"),
]


@pytest.mark.parametrize("shape,error,message", [c[1:] for c in BAD_SHAPES], ids=[c[0] for c in BAD_SHAPES])
def test_bad_shapes_are_refused_before_the_data_is_read(shape, error, message):
    for dt in (BY_NAME["FP32"], BYTES):
        with pytest.raises(error, match=message) as raised:
            raw.decode(b"", dt, shape, "x")
        assert raised.value.message.startswith("Input 'x'")


def test_shapes_check_applies_the_row_and_byte_limits():
    limits = TensorLimits(max_rows=2, max_bytes=100)
    batched = TensorSpec("x", np.dtype(np.float32), (None, 1), "DT_FLOAT")
    fixed = TensorSpec("x", np.dtype(np.float32), (3, 1), "DT_FLOAT")
    assert shapes.check([2, 1], BY_NAME["FP32"], "x", limits, batched) == ((2, 1), 2)
    assert shapes.check([3, 1], BY_NAME["FP32"], "x", limits, fixed) == ((3, 1), 3)
    with pytest.raises(PayloadTooLarge, match="^Input 'x' has 3 rows; the limit is 2$"):
        shapes.check([3, 1], BY_NAME["FP32"], "x", limits, batched)
    with pytest.raises(PayloadTooLarge, match="Input 'x' of shape \\[1,26\\] and FP32 would take 104 bytes"):
        shapes.check([1, 26], BY_NAME["FP32"], "x", limits)
    with pytest.raises(PayloadTooLarge, match="and BYTES would take 104 bytes"):  # a pointer an element
        shapes.check([1, 13], BYTES, "x", limits)
    assert shapes.check([1, 12], BYTES, "x", limits) == ((1, 12), 12)


def test_shapes_check_reads_a_grpc_shape():
    tensor = protos.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[2, 3])
    assert shapes.check(tensor.shape, BY_NAME["FP32"], "x") == ((2, 3), 6)


def test_a_hostile_long_name_is_cut_short_in_messages():
    with pytest.raises(InvalidArgument) as raised:
        raw.decode(b"", BY_NAME["FP32"], [1], "n" * 100_000)
    assert raised.value.message.startswith("Input '" + "n" * 64 + "...'") and len(raised.value.message) < 200


def test_encoding_an_array_of_another_dtype_is_the_servers_error():
    for array, dt in ((np.zeros(2, np.float64), BY_NAME["FP32"]), (np.zeros(2, np.float32), BYTES),
                      (np.array([1, b"a"], object), BYTES), (np.array([None], object), BYTES)):
        with pytest.raises(ServingError) as raised:
            raw.encode(array, dt)
        assert type(raised.value) is ServingError  # 500: not the client's fault
