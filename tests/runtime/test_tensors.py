"""The TensorProto codec: valid protos decode exactly as ``tf.make_ndarray``; malformed ones
are InvalidArgument (PayloadTooLarge for a limit) before anything is allocated."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving.errors import InvalidArgument, PayloadTooLarge, ServingError
from serving.runtime.signature import TensorSpec
from serving.runtime.tensors import TensorLimits, answer_limits, protos_to_numpy, to_numpy, to_proto

D = types_pb2


def proto(dtype: int, shape: list[int], **fields) -> tensor_pb2.TensorProto:
    p = tensor_pb2.TensorProto(dtype=dtype)
    p.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in shape]))
    for name, value in fields.items():
        if name == "tensor_content" or name == "float8_val":
            setattr(p, name, value)
        else:
            getattr(p, name).extend(value)
    return p


def _valid() -> list[tuple[str, tensor_pb2.TensorProto]]:
    numeric = [np.float32, np.float64, np.int32, np.uint8, np.int16, np.int8, np.int64, np.uint16,
               np.uint32, np.uint64, np.float16, np.complex64, np.complex128, np.bool_]
    cases = []
    rng = np.random.default_rng(7)
    for dtype in numeric:
        array = (rng.standard_normal((2, 3)) * 100).astype(dtype)
        if np.dtype(dtype).kind == "c":
            array = array + 1j * array.astype(dtype)
        cases.append((f"{np.dtype(dtype)} content", tf.make_tensor_proto(array)))          # tensor_content
        cases.append((f"{np.dtype(dtype)} scalar", tf.make_tensor_proto(array.ravel()[0])))  # *_val, one value
        cases.append((f"{np.dtype(dtype)} broadcast", tf.make_tensor_proto(array.ravel()[1], shape=[2, 2])))
        cases.append((f"{np.dtype(dtype)} empty", tf.make_tensor_proto(np.zeros((0, 3), dtype))))
    for name in ("bfloat16", "float8_e5m2", "float8_e4m3fn", "qint8", "quint8", "qint16", "quint16", "qint32"):
        tf_dtype = tf.dtypes.as_dtype(getattr(D, f"DT_{name.upper()}"))
        if "q" in name:
            array = tf.make_ndarray(tf.make_tensor_proto(np.array([[1, 2, 3]]), dtype=tf_dtype))
            cases.append((f"{name} content", tf.make_tensor_proto(array, dtype=tf_dtype)))
            cases.append((f"{name} values", proto(tf_dtype.as_datatype_enum, [1, 3], int_val=[1, 2, 3])))
        else:
            array = np.array([[1.5, -2.0, 3.25]], dtype=tf_dtype.as_numpy_dtype)
            cases.append((f"{name} content", tf.make_tensor_proto(array)))
            cases.append((f"{name} one value", tf.make_tensor_proto(array.reshape(-1)[:1])))
    # *_val fields written out in full, as TF Serving's own clients and TF's C++ AsProtoField do
    cases += [
        ("float_val 2x2", proto(D.DT_FLOAT, [2, 2], float_val=[1, 2, 3, 4])),
        ("half_val bits", proto(D.DT_HALF, [3], half_val=[0x3C00, 0xC000, 0x7C00])),
        ("bfloat16 half_val bits", proto(D.DT_BFLOAT16, [2], half_val=[0x3F80, 0xFF80])),
        ("float8 bits", proto(D.DT_FLOAT8_E4M3FN, [2], float8_val=b"\x38\xb8")),
        ("bool_val", proto(D.DT_BOOL, [3], bool_val=[True, False, True])),
        ("int8 int_val", proto(D.DT_INT8, [2], int_val=[-128, 127])),
        ("uint16 int_val", proto(D.DT_UINT16, [2], int_val=[0, 65535])),
        ("uint64_val", proto(D.DT_UINT64, [2], uint64_val=[0, 2**64 - 1])),
        ("complex pairs", proto(D.DT_COMPLEX64, [2], scomplex_val=[1, 2, 3, 4])),
        ("dcomplex broadcast", proto(D.DT_COMPLEX128, [2, 2], dcomplex_val=[1, -1])),
        ("string_val", tf.make_tensor_proto([[b"a", b"\x00b"], [b"", "\u00e9".encode()]])),
        ("string scalar", tf.make_tensor_proto(b"jpeg bytes")),
        ("string broadcast", proto(D.DT_STRING, [3], string_val=[b"x"])),
        ("string empty", proto(D.DT_STRING, [0, 4])),
        ("rank 0", proto(D.DT_INT64, [], int64_val=[7])),
    ]
    return cases


VALID = _valid()


@pytest.mark.parametrize("name,p", VALID, ids=[c[0] for c in VALID])
def test_valid_protos_decode_as_make_ndarray(name, p):
    expected = tf.make_ndarray(p)
    got = to_numpy("x", p)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    if expected.dtype.names:  # quantized: a structured dtype over one integer field
        expected, got = expected.view(expected.dtype[0]), got.view(got.dtype[0])
    assert np.array_equal(got, expected, equal_nan=got.dtype.kind in "fc")
    assert got.flags.writeable and got.flags.c_contiguous


def test_round_trip_through_to_proto():
    for array in (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([b"a", b"b"], dtype=object),
                  np.array([True, False]), np.array(3.5)):
        assert np.array_equal(to_numpy("x", to_proto(array)), array)


HUGE = 2**31
MALFORMED = [
    ("DT_INVALID", proto(D.DT_INVALID, [1], float_val=[1]), "DT_INVALID"),
    ("DT_RESOURCE", proto(D.DT_RESOURCE, [1]), "DT_RESOURCE"),
    ("DT_VARIANT", proto(D.DT_VARIANT, [1]), "DT_VARIANT"),
    ("a ref type", proto(D.DT_FLOAT_REF, [1], float_val=[1]), "DT_FLOAT_REF"),
    ("an unknown enum", proto(999, [1]), "data type 999"),
    ("int4", proto(D.DT_INT4, [1], int_val=[1]), "DT_INT4"),
    ("unknown rank", tensor_pb2.TensorProto(dtype=D.DT_FLOAT, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        unknown_rank=True), float_val=[1]), "unknown rank"),
    ("negative dim", proto(D.DT_FLOAT, [-1, 2], float_val=[1]), "negative"),
    ("overflowing dims", proto(D.DT_FLOAT, [2**40, 2**40], float_val=[1]), "overflows"),
    ("overflowing dims beside a zero", proto(D.DT_FLOAT, [0, 2**62, 2**62]), "overflows"),
    ("too many dims", proto(D.DT_FLOAT, [1] * 300, float_val=[1]), "dimensions"),
    ("more dims than numpy's 64, fewer than TF's 254", proto(D.DT_FLOAT, [1] * 65, float_val=[1]),
     "65 dimensions; the most is 64"),
    ("no values", proto(D.DT_FLOAT, [3]), "no values"),
    ("no strings", proto(D.DT_STRING, [2]), "no values"),
    ("too few values", proto(D.DT_FLOAT, [3], float_val=[1, 2]), "has 2 values"),
    ("too many values", proto(D.DT_FLOAT, [2], float_val=[1, 2, 3]), "has 3 values"),
    ("values for no elements", proto(D.DT_FLOAT, [0], float_val=[1]), "has 1 values"),
    ("too many strings", proto(D.DT_STRING, [1], string_val=[b"a", b"b"]), "has 2 values"),
    ("short content", proto(D.DT_FLOAT, [3], tensor_content=b"\0" * 8), "needs 12"),
    ("long content", proto(D.DT_FLOAT, [1], tensor_content=b"\0" * 5), "needs 4"),
    ("string content lengths that overrun", proto(D.DT_STRING, [1], tensor_content=b"abcdefgh"), "add up"),
    ("string content with bytes left over", proto(D.DT_STRING, [1], tensor_content=b"\x01ab"), "add up"),
    ("string content too short for its lengths", proto(D.DT_STRING, [3], tensor_content=b"\x80\x80"),
     "too short"),
    ("string content length over 5 bytes", proto(D.DT_STRING, [2], tensor_content=b"\xff" * 6 + b"\x01\x00"),
     "over 5 bytes"),
    ("string content length over 32 bits", proto(D.DT_STRING, [1], tensor_content=b"\xff" * 4 + b"\x7f"),
     "32 bits"),
    ("string content for no elements", proto(D.DT_STRING, [0], tensor_content=b"\x00"), "no elements"),
    ("odd complex", proto(D.DT_COMPLEX64, [1], scomplex_val=[1, 2, 3]), "pairs"),
    ("int8 out of range", proto(D.DT_INT8, [1], int_val=[300]), "range"),
    ("half bits out of range", proto(D.DT_HALF, [1], half_val=[70000]), "range"),
    ("negative half bits", proto(D.DT_HALF, [1], half_val=[-1]), "range"),
]


@pytest.mark.parametrize("name,p,message", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_protos_are_invalid_argument(name, p, message):
    with pytest.raises(InvalidArgument, match=message) as raised:
        to_numpy("x", p)
    assert "'x'" in raised.value.message


def test_limits_are_checked_before_anything_is_allocated():
    limits = TensorLimits(max_rows=100, max_bytes=1 << 20)
    # The 20-byte request that took the server down: 2**31 strings and no values.
    with pytest.raises(PayloadTooLarge, match="2147483648 rows"):
        to_numpy("x", proto(D.DT_STRING, [HUGE]), limits)
    with pytest.raises(PayloadTooLarge, match="bytes decoded"):  # one value broadcast to 1.6 GB
        to_numpy("x", proto(D.DT_FLOAT, [10, 2**26], float_val=[1]), limits)
    with pytest.raises(PayloadTooLarge, match="would take"):  # several inputs count together
        protos_to_numpy({k: proto(D.DT_FLOAT, [10, 2**14], float_val=[1]) for k in "abc"}, limits)
    # Without limits, content must still match: no allocation from a tiny proto.
    with pytest.raises(InvalidArgument, match="no values"):
        to_numpy("x", proto(D.DT_STRING, [HUGE]))


def test_rows_limit_applies_to_batched_inputs_only():
    limits = TensorLimits(max_rows=2)
    fixed = TensorSpec("x", np.dtype(np.float32), (3,))
    assert to_numpy("x", proto(D.DT_FLOAT, [3], float_val=[1]), limits, fixed).shape == (3,)
    batched = TensorSpec("x", np.dtype(np.float32), (None,))
    with pytest.raises(PayloadTooLarge):
        to_numpy("x", proto(D.DT_FLOAT, [3], float_val=[1]), limits, batched)


def test_the_signature_dtype_is_checked_first():
    spec = TensorSpec("x", np.dtype(np.float32), (None,), "DT_FLOAT")
    with pytest.raises(InvalidArgument, match="expects DT_FLOAT, got DT_STRING"):
        to_numpy("x", proto(D.DT_STRING, [HUGE]), TensorLimits(), spec)


def test_an_answer_may_not_claim_more_than_its_values_hold():
    from tensorflow_serving.apis import predict_pb2

    answer = predict_pb2.PredictResponse()
    answer.outputs["y"].CopyFrom(tf.make_tensor_proto(np.ones((32, 4), np.float32)))
    assert protos_to_numpy(answer.outputs, answer_limits(answer))["y"].shape == (32, 4)
    answer.outputs["y"].CopyFrom(proto(D.DT_DOUBLE, [HUGE, 4], double_val=[1.0]))
    with pytest.raises(PayloadTooLarge, match="Output 'y'"):
        protos_to_numpy(answer.outputs, answer_limits(answer), role="Output")


# What TensorFlow's C++ ``Tensor::AsProtoField`` writes (tensorflow/core/framework/tensor.cc,
# ``ProtoHelper<T>::Fill``), which TF Serving's Predict answers with: each dtype's typed field
# and its values as that field holds them, written out here from the C++ rather than derived
# from ``to_proto``'s table.
def _pairs(a):  # complex: (real, imaginary) per element
    return [part for v in a.tolist() for part in (v.real, v.imag)]


def _bits(a):  # half and bfloat16: each element's 16 bits, in an int32 field
    return [int(b) for b in a.view(np.uint16)]


def _as_ints(a):  # quantized: the integer inside the structured element
    return [int(v) for v in a.view(a.dtype[0])]


AS_PROTO_FIELD = {
    "float32": ("float_val", list), "float64": ("double_val", list),
    "int32": ("int_val", list), "int16": ("int_val", list), "int8": ("int_val", list),
    "uint8": ("int_val", list), "uint16": ("int_val", list), "uint32": ("uint32_val", list),
    "int64": ("int64_val", list), "uint64": ("uint64_val", list), "bool": ("bool_val", list),
    "object": ("string_val", list),
    "complex64": ("scomplex_val", _pairs), "complex128": ("dcomplex_val", _pairs),
    "float16": ("half_val", _bits), "bfloat16": ("half_val", _bits),
    "float8_e5m2": ("float8_val", bytes), "float8_e4m3fn": ("float8_val", bytes),
    "float8_e4m3fnuz": ("float8_val", bytes), "float8_e4m3b11fnuz": ("float8_val", bytes),
    "float8_e5m2fnuz": ("float8_val", bytes),
    "qint8": ("int_val", _as_ints), "quint8": ("int_val", _as_ints), "qint16": ("int_val", _as_ints),
    "quint16": ("int_val", _as_ints), "qint32": ("int_val", _as_ints),
}

SHAPES = {"scalar": (), "1 row": (1, 1), "3 rows": (3,), "3 rows x 4": (3, 4), "512 rows": (512,),
          "512 rows x 3": (512, 3), "empty": (0, 3), "rank 3": (2, 3, 2)}


def _sample(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Values of dtype ``name`` across its range (negatives, extremes, NaN where it has one)."""
    count = int(np.prod(shape))
    rng = np.random.default_rng(count)
    if name == "object":
        values = [bytes(rng.integers(0, 256, int(n)).astype(np.uint8)) for n in rng.integers(0, 300, count)]
        return np.array(values + [b""] * 0, dtype=object).reshape(shape)
    if name.startswith("q"):
        tf_dtype = tf.dtypes.as_dtype(getattr(D, f"DT_{name.upper()}"))
        base = np.dtype(tf_dtype.as_numpy_dtype)[0]
        info = np.iinfo(base)
        ints = rng.integers(info.min, info.max, count, endpoint=True).astype(base)
        return ints.view(np.dtype(tf_dtype.as_numpy_dtype)).reshape(shape)
    dtype = np.dtype(tf.dtypes.as_dtype(name).as_numpy_dtype) if name != "bool" else np.dtype(np.bool_)
    if dtype.kind == "b":
        return (rng.integers(0, 2, count) == 1).reshape(shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, count, dtype=dtype, endpoint=True).reshape(shape)
    if dtype.kind == "c":
        parts = rng.standard_normal((2, count)) * 1e3
        return (parts[0] + 1j * parts[1]).astype(dtype).reshape(shape)
    values = (rng.standard_normal(count) * 100).astype(np.float64)
    values[::7] = -0.0
    if count > 3:
        values[3] = np.nan
    return values.astype(dtype).reshape(shape)


def _expected_field_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    name = array.dtype.name if array.dtype.names is None else next(
        q for q in ("qint8", "quint8", "qint16", "quint16", "qint32")
        if np.dtype(tf.dtypes.as_dtype(getattr(D, f"DT_{q.upper()}")).as_numpy_dtype) == array.dtype)
    field, values = AS_PROTO_FIELD[name]
    enum = D.DT_STRING if name == "object" else (
        tf.dtypes.as_dtype(getattr(D, f"DT_{name.upper()}")).as_datatype_enum if name.startswith("q")
        else tf.dtypes.as_dtype(array.dtype).as_datatype_enum)
    expected = tensor_pb2.TensorProto(dtype=enum)
    expected.tensor_shape.SetInParent()
    for size in array.shape:
        expected.tensor_shape.dim.add(size=size)
    flat = array.reshape(-1)
    if flat.size:
        if field == "float8_val":
            expected.float8_val = flat.view(np.uint8).tobytes()
        else:
            getattr(expected, field).extend(values(flat))
    return expected


def _same(got: np.ndarray, want: np.ndarray) -> bool:
    if want.dtype.names:
        got, want = got.view(got.dtype[0]), want.view(want.dtype[0])
    if want.dtype.kind in "fcV" or want.dtype.name.startswith(("bfloat", "float8")):
        return got.tobytes() == want.tobytes()  # bit for bit: NaN and -0.0 included
    return got.shape == want.shape and np.array_equal(got, want)


@pytest.mark.parametrize("shape", sorted(SHAPES), ids=sorted(SHAPES))
@pytest.mark.parametrize("name", sorted(AS_PROTO_FIELD))
def test_answers_are_written_as_tensorflows_as_proto_field(name, shape):
    """Every value in its typed field (nothing in tensor_content), byte for byte what the
    table above says, and ``tf.make_ndarray`` of it gives the array back."""
    array = _sample(name, SHAPES[shape])
    got = to_proto(array)
    assert got.tensor_content == b""
    assert got.SerializeToString() == _expected_field_proto(array).SerializeToString()
    if name not in MAKE_NDARRAY_LACKS:
        back = tf.make_ndarray(got)
        assert back.shape == array.shape and _same(back, array)
    assert _same(to_numpy("x", got), array)


MAKE_NDARRAY_LACKS = ("float8_e4m3fnuz", "float8_e4m3b11fnuz", "float8_e5m2fnuz")
"""dtypes TensorFlow's C++ serves but its Python ``tf.make_ndarray`` does not read."""


SERIALIZE_TENSOR_DTYPES = ["float32", "float64", "int32", "int16", "int8", "uint8", "uint16", "uint32",
                           "int64", "uint64", "bool", "complex64", "complex128", "float16", "bfloat16"]


@pytest.mark.parametrize("shape", sorted(SHAPES), ids=sorted(SHAPES))
@pytest.mark.parametrize("name", SERIALIZE_TENSOR_DTYPES + ["object"])
def test_content_form_is_tensorflows_as_proto_tensor_content(name, shape):
    """``--enable_serialization_as_tensor_content``: TensorFlow's own C++ writes the expected
    bytes (``tf.io.serialize_tensor`` is ``AsProtoTensorContent`` for these dtypes; for
    strings it is ``AsProtoField``, so their encoded list is checked against its definition)."""
    array = _sample(name, SHAPES[shape])
    got = to_proto(array, content=True)
    if name == "object":
        flat = array.reshape(-1).tolist()
        lengths = b"".join(_varint(len(v)) for v in flat)
        assert got.tensor_content == lengths + b"".join(flat) and not got.string_val
    else:
        assert got.SerializeToString() == tf.io.serialize_tensor(tf.constant(array)).numpy()
    assert _same(to_numpy("x", got), array)


def _varint(n: int) -> bytes:
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def test_answers_fill_a_response_entry_in_place():
    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    array = np.arange(600, dtype=np.float32).reshape(200, 3)
    assert to_proto(array, into=response.outputs["y"]) is response.outputs["y"]
    assert response.outputs["y"].SerializeToString() == _expected_field_proto(array).SerializeToString()


def test_arrays_of_any_layout_are_written_in_c_order():
    base = np.arange(24, dtype=np.int64).reshape(4, 6)
    for array in (base.T, np.asfortranarray(base), base[:, ::2], base[::-1]):
        assert list(to_proto(array).int64_val) == array.ravel().tolist()
        assert np.array_equal(tf.make_ndarray(to_proto(array, content=True)), array)


def test_a_dtype_tf_serving_lacks_is_refused():
    with pytest.raises(ServingError, match="float4_e2m1fn|cannot be sent"):
        to_proto(np.zeros(2, dtype=tf.dtypes.as_dtype(D.DT_FLOAT4_E2M1FN).as_numpy_dtype))
    with pytest.raises(ServingError, match="cannot be sent"):
        to_proto(np.zeros(2, dtype="datetime64[s]"))


def test_str_values_are_sent_as_utf8():
    assert list(to_proto(np.array(["\u00e9", b"x"], dtype=object)).string_val) == ["\u00e9".encode(), b"x"]


ENCODED_STRINGS = [
    ("lengths and strings", [2], b"\x01\x02abc", [b"a", b"bc"]),
    ("a 300-byte string (two-byte length)", [1], b"\xac\x02" + b"z" * 300, [b"z" * 300]),
    ("empty strings", [2, 1], b"\x00\x00", [b"", b""]),
]


@pytest.mark.parametrize("name,shape,content,values", ENCODED_STRINGS, ids=[c[0] for c in ENCODED_STRINGS])
def test_string_tensor_content_decodes_as_tensorflows_decode_string_list(name, shape, content, values):
    """TensorFlow accepts DT_STRING in tensor_content (C++ clients' AsProtoTensorContent)."""
    p = proto(D.DT_STRING, shape, tensor_content=content)
    assert to_numpy("x", p).reshape(-1).tolist() == values
    assert tf.make_ndarray(tf.make_tensor_proto(to_numpy("x", p))).reshape(-1).tolist() == values


def test_string_content_is_cut_up_only_once_all_inputs_fit_the_limit():
    """Many string inputs, each within the limit: refused on their sizes together before any
    of their content is read (an 8 MB request must not cost seconds and 80 MB first)."""
    import tracemalloc

    limits = TensorLimits(max_bytes=8 << 20)
    n = 1 << 20  # 8 MiB counted per input: exactly the limit
    protos = {f"junk{i}": proto(D.DT_STRING, [n], tensor_content=b"\x00" * n) for i in range(8)}
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge, match="together|would take"):
            protos_to_numpy(protos, limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes allocated before refusing"
    one = to_numpy("x", proto(D.DT_STRING, [n], tensor_content=b"\x00" * n), limits)
    assert one.shape == (n,) and one[0] == b"" and one[-1] == b""


@pytest.mark.parametrize("count", [1, 3, 20, 100])
@pytest.mark.parametrize("dtype,bits", [(np.float32, 0x7F800001), (np.float64, 0x7FF0000000000001)])
def test_float_bits_cross_unchanged_signalling_nans_included(dtype, bits, count):
    """TensorFlow's C++ copies float bits as they are; a Python float would quiet the NaN."""
    raw = np.full(count, bits, dtype=np.uint32 if dtype is np.float32 else np.uint64)
    array = raw.view(dtype)
    for content in (False, True):
        sent = to_proto(array, content=content)
        back = to_numpy("x", tensor_pb2.TensorProto.FromString(sent.SerializeToString()))
        assert back.tobytes() == array.tobytes()
    field = to_proto(array).SerializeToString()
    assert array.tobytes() in field  # the packed run holds the bits themselves
