"""The TensorProto codec: valid protos decode exactly as ``tf.make_ndarray``; malformed ones
are InvalidArgument (PayloadTooLarge for a limit) before anything is allocated."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving.errors import InvalidArgument, PayloadTooLarge
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
    ("no values", proto(D.DT_FLOAT, [3]), "no values"),
    ("no strings", proto(D.DT_STRING, [2]), "no values"),
    ("too few values", proto(D.DT_FLOAT, [3], float_val=[1, 2]), "has 2 values"),
    ("too many values", proto(D.DT_FLOAT, [2], float_val=[1, 2, 3]), "has 3 values"),
    ("values for no elements", proto(D.DT_FLOAT, [0], float_val=[1]), "has 1 values"),
    ("too many strings", proto(D.DT_STRING, [1], string_val=[b"a", b"b"]), "has 2 values"),
    ("short content", proto(D.DT_FLOAT, [3], tensor_content=b"\0" * 8), "needs 12"),
    ("long content", proto(D.DT_FLOAT, [1], tensor_content=b"\0" * 5), "needs 4"),
    ("string content", proto(D.DT_STRING, [1], tensor_content=b"abcdefgh"), "string_val"),
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


_LAYOUTS = {
    "scalar": lambda a: a.reshape(-1)[:1].reshape(()),
    "one": lambda a: a.reshape(-1)[:1],
    "row": lambda a: a.reshape(-1),
    "matrix": lambda a: a.reshape(3, 4),
    "transposed": lambda a: a.reshape(3, 4).T,
    "fortran": lambda a: np.asfortranarray(a.reshape(2, 6)),
    "empty": lambda a: a.reshape(-1)[:0].reshape(0, 3),
}
_DTYPES = [np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
           np.uint32, np.uint64, np.bool_, np.float16, object]


@pytest.mark.parametrize("dtype", _DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", sorted(_LAYOUTS))
def test_to_proto_is_byte_identical_to_tensorflows(dtype, layout):
    """``to_proto`` builds common dtypes by hand: the bytes must be TensorFlow's own."""
    base = np.arange(12) % 7
    values = np.array([f"v{n}".encode() for n in base], dtype=object) if dtype is object else base.astype(dtype)
    array = _LAYOUTS[layout](values)
    expected = tf.make_tensor_proto(array, dtype=tf.string if dtype is object else None)
    assert to_proto(array).SerializeToString() == expected.SerializeToString()
