"""The REST codec against TF Serving's documented examples and json_tensor_test.cc cases."""
from __future__ import annotations

import json
import math
import re
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from serving.core.results import classifications, regressions
from serving.errors import InvalidArgument, Unimplemented
from serving.rest import codec
from serving.runtime.signature import PREDICT, SignatureSpec, TensorSpec

F32, F64, I32, I64 = np.float32, np.float64, np.int32, np.int64
NAN, INF = float("nan"), float("inf")


def sig(**inputs: Any) -> SignatureSpec:
    """A predict signature whose inputs have the given dtypes and any shape."""
    specs = {name: TensorSpec(name, np.dtype(dtype), None) for name, dtype in inputs.items()}
    return SignatureSpec("serving_default", PREDICT, specs, {}, tuple(specs))


def strings(*values: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    arr = np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=object)
    return arr.reshape(shape if shape is not None else (len(values),))


def decode(body: str | bytes, signature: SignatureSpec) -> tuple[dict[str, np.ndarray], str]:
    return codec.decode_predict(codec.parse_json(body.encode() if isinstance(body, str) else body),
                                signature)


def assert_tensors(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype, name
        assert got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


# --- parse_json ------------------------------------------------------------------------


def test_parse_json_object():
    assert codec.parse_json(b'{"instances": [1, 2.5e3]}') == {"instances": [1, 2500.0]}


def test_parse_json_accepts_nan_and_infinity_tokens():
    doc = codec.parse_json(b'{"x": [NaN, Infinity, -Infinity, 1.0]}')
    nan, inf, neg, one = doc["x"]
    assert math.isnan(nan) and inf == INF and neg == -INF and one == 1.0


@pytest.mark.parametrize("number, value", [
    # rapidjson 1.1.0 as TF Serving parses (no kParseFullPrecisionFlag) reads these, some as
    # infinity: its exponent limit is 308 plus the fraction digits
    ("1.8e308", INF), ("-10e308", -INF), ("0.1e309", 1e308), ("1" + "0" * 308, 1e308),
    ("17" + "0" * 307, 1.7e308), ("123.456e307", INF), ("1.7976931348623157e309", INF),
    ("1." + "0" * 23 + "e309", INF),
    # an integer beyond int64 and uint64 is a double (orjson agrees)
    ("18446744073709551616", 2.0**64), ("-9223372036854775809", -(2.0**63)),
    ("18446744073709551615", 2**64 - 1), ("-9223372036854775808", -(2**63)),
])
def test_parse_json_reads_numbers_as_rapidjson(number: str, value: float):
    for body in (f'{{"x": [{number}]}}', f'{{"x": [NaN, {number}]}}'):  # orjson, the stdlib fallback
        got = codec.parse_json(body.encode())["x"][-1]
        assert got == value and type(got) is type(value), body


@pytest.mark.parametrize("number", ["1e400", "-1e309", "1e0309", "2" + "0" * 308, "1" * 400, "1" * 5000])
def test_parse_json_refuses_numbers_rapidjson_finds_too_big(number: str):
    for body in (f'{{"x": [{number}]}}', f'{{"x": [NaN, {number}]}}'):
        with pytest.raises(InvalidArgument, match=r"^JSON Parse error: Number too big to be stored in double\.$"):
            codec.parse_json(body.encode())


@pytest.mark.parametrize("body, message", [
    (b"", "JSON Parse error: The document is empty"),
    (b"{", "JSON Parse error"),
    (b'{"instances": [1, 2,]}', "JSON Parse error"),
    (b"   ", "JSON Parse error"),
    (b'{"a": "\xff"}', "JSON Parse error"),
    (b"[1, 2]", r"JSON Value: \[1,2\] Is not object"),
    (b'"text"', "Is not object"),
    (b"NaN", "Is not object"),
])
def test_parse_json_errors(body: bytes, message: str):
    with pytest.raises(InvalidArgument, match=message):
        codec.parse_json(body)


# --- decode_predict: accepted requests -------------------------------------------------

TAG_SIGNAL_SENSOR = sig(tag=object, signal=I32, sensor=I32)
TAG_SIGNAL_SENSOR_TENSORS = {
    "tag": strings("foo", "bar"),
    "signal": np.array([[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]], dtype=I32),
    "sensor": np.array([[[1, 2], [3, 4]], [[4, 5], [6, 8]]], dtype=I32),
}

DECODE_CASES = [
    # (id, body, signature, expected tensors, expected form)
    ("doc-row-named", """{"instances": [
        {"tag": "foo", "signal": [1, 2, 3, 4, 5], "sensor": [[1, 2], [3, 4]]},
        {"tag": "bar", "signal": [3, 4, 1, 2, 5], "sensor": [[4, 5], [6, 8]]}]}""",
     TAG_SIGNAL_SENSOR, TAG_SIGNAL_SENSOR_TENSORS, "row"),
    ("doc-columnar-named", """{"inputs": {
        "tag": ["foo", "bar"],
        "signal": [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]],
        "sensor": [[[1, 2], [3, 4]], [[4, 5], [6, 8]]]}}""",
     TAG_SIGNAL_SENSOR, TAG_SIGNAL_SENSOR_TENSORS, "columnar"),
    ("doc-row-scalar-strings", '{"instances": ["foo", "bar", "baz"]}', sig(x=object),
     {"x": strings("foo", "bar", "baz")}, "row"),
    ("doc-row-1x2-tensors", '{"instances": [[[1, 2]], [[3, 4]]]}', sig(x=I32),
     {"x": np.array([[[1, 2]], [[3, 4]]], dtype=I32)}, "row"),
    ("doc-half-plus-three", '{"instances": [1.0, 2.0, 5.0]}', sig(x=F32),
     {"x": np.array([1, 2, 5], dtype=F32)}, "row"),
    ("tf-single-unnamed", '{"instances": [[1,2],[3,4],[5,6]]}', sig(default=I32),
     {"default": np.array([[1, 2], [3, 4], [5, 6]], dtype=I32)}, "row"),
    ("tf-mixed-float", '{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}', sig(default=F32),
     {"default": np.array([1, 2, 3, 4, 5.003, 0.007, 0], dtype=F32)}, "row"),
    ("tf-mixed-double", '{"instances": [1.0, 2, 3, 4, 0.662, 0, 0.0]}', sig(default=F64),
     {"default": np.array([1, 2, 3, 4, 0.662, 0, 0], dtype=F64)}, "row"),
    ("tf-signature-name-ignored", '{"signature_name": "predict_images", "instances": [[1,2]]}',
     sig(default=I32), {"default": np.array([[1, 2]], dtype=I32)}, "row"),
    ("tf-b64-scalars", '{"instances": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]}',
     sig(default=object), {"default": strings("hello", "world")}, "row"),
    ("tf-b64-lists", '{"instances": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]]}',
     sig(default=object), {"default": strings("hello", "world", shape=(2, 1))}, "row"),
    ("tf-single-named-b64",
     '{"instances": [{"default": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]]}]}',
     sig(default=object), {"default": strings("hello", "world", shape=(1, 2, 1))}, "row"),
    ("tf-multiple-named-nan-inf", """{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"],
         "float_tensor": [1.0, NaN], "dbl_tensor": [NaN]},
        {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"],
         "float_tensor": [2.0, Infinity], "dbl_tensor": [2.0]}]}""",
     sig(int_tensor=I32, str_tensor=object, float_tensor=F32, dbl_tensor=F64),
     {"int_tensor": np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], dtype=I32),
      "str_tensor": strings("foo", "bar", "baz", "bat", shape=(2, 2)),
      "float_tensor": np.array([[1, NAN], [2, INF]], dtype=F32),
      "dbl_tensor": np.array([[NAN], [2]], dtype=F64)}, "row"),
    ("tf-columnar-single-named", '{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]]}}',
     sig(int_tensor=I32), {"int_tensor": np.array([[[1, 2], [3, 4], [5, 6]]], dtype=I32)},
     "columnar"),
    ("tf-columnar-single-unnamed", '{"inputs": [[[1,2],[3,4],[5,6]]]}', sig(int_tensor=I32),
     {"int_tensor": np.array([[[1, 2], [3, 4], [5, 6]]], dtype=I32)}, "columnar"),
    ("tf-columnar-multiple-b64-scalar", """{"inputs": {
        "int_tensor": [[[1,2],[3,4],[5,6]]], "str_tensor": ["foo", "bar"],
        "bin_tensor": {"b64": "aGVsbG8="}}}""",
     sig(int_tensor=I32, str_tensor=object, bin_tensor=object),
     {"int_tensor": np.array([[[1, 2], [3, 4], [5, 6]]], dtype=I32),
      "str_tensor": strings("foo", "bar"), "bin_tensor": strings("hello", shape=())},
     "columnar"),
    ("columnar-scalar", '{"inputs": 2.5}', sig(x=F32), {"x": np.array(2.5, dtype=F32)},
     "columnar"),
    ("columnar-b64-scalar-unnamed", '{"inputs": {"b64": "AP8="}}', sig(x=object),
     {"x": strings(b"\x00\xff", shape=())}, "columnar"),
    ("columnar-different-dim0", '{"inputs": {"a": [1, 2, 3], "b": [[1.5]]}}', sig(a=I64, b=F32),
     {"a": np.array([1, 2, 3], dtype=I64), "b": np.array([[1.5]], dtype=F32)}, "columnar"),
    ("exponent-notation", '{"instances": [1e3, 2.5E-2, -1e-1, 3E+2, 1e-50]}', sig(x=F32),
     {"x": np.array([1000, 0.025, -0.1, 300, 0], dtype=F32)}, "row"),
    ("exponent-notation-double", '{"inputs": [1.7976931348623157e308, 5e-324]}', sig(x=F64),
     {"x": np.array([1.7976931348623157e308, 5e-324], dtype=F64)}, "columnar"),
    ("nan-infinity-float", '{"instances": [NaN, Infinity, -Infinity, 1.5]}', sig(x=F32),
     {"x": np.array([NAN, INF, -INF, 1.5], dtype=F32)}, "row"),
    ("largest-exact-int-to-float", '{"instances": [16777215, -16777215]}', sig(x=F32),
     {"x": np.array([16777215, -16777215], dtype=F32)}, "row"),
    ("float32-max", '{"instances": [3.4028234663852886e38, -3.4028234663852886e38]}', sig(x=F32),
     {"x": np.array([3.4028234663852886e38, -3.4028234663852886e38], dtype=F32)}, "row"),
    # Any JSON number converts (TF Serving 2.10+, json_tensor.cc: the double, static_cast to
    # float): json_tensor_test.cc's FloatTensorWithPrecisionLoss (api_rest.md: "1435774380 is
    # silently converted to 1435774336"), FloatTensorThatExceedsMaxReturnsInf and
    # FloatTensorThatExceedsMinReturnsZero (absl::Substitute writes the limits with six digits)
    ("tf-precision-loss-int", '{"instances": [1435774380]}', sig(default=F32),
     {"default": np.array([1435774336], dtype=F32)}, "row"),
    ("tf-precision-loss-decimal", '{"instances": [1435774380.0]}', sig(default=F32),
     {"default": np.array([1435774336], dtype=F32)}, "row"),
    ("tf-exceeds-max-returns-inf", '{"instances": [1.79769e+308]}', sig(default=F32),
     {"default": np.array([INF], dtype=F32)}, "row"),
    ("tf-exceeds-lowest-returns-minus-inf", '{"instances": [-1.79769e+308]}', sig(default=F32),
     {"default": np.array([-INF], dtype=F32)}, "row"),
    ("tf-exceeds-min-returns-zero", '{"instances": [2.22507e-308, -2.22507e-308]}', sig(default=F32),
     {"default": np.array([0.0, -0.0], dtype=F32)}, "row"),
    ("int-past-float-exact-range", '{"instances": [16777217, -16777217]}', sig(x=F32),
     {"x": np.array([16777216, -16777216], dtype=F32)}, "row"),
    ("int-past-double-exact-range", '{"inputs": [9007199254740993]}', sig(x=F64),
     {"x": np.array([9007199254740992], dtype=F64)}, "columnar"),
    # an int becomes a double first (rapidjson's GetFloat), then a float: 2**60 + 2**36 + 1 is
    # the double 2**60 + 2**36, halfway between two floats, so it rounds to even (2**60), where
    # converting the int straight to float would round up
    ("int-to-float-through-double", json.dumps({"inputs": [2**60 + 2**36 + 1] * 3}), sig(x=F32),
     {"x": np.full(3, 2**60, dtype=F32)}, "columnar"),
    ("many-ints-to-float-through-double", json.dumps({"inputs": [2**60 + 2**36 + 1] * 100}),
     sig(x=F32), {"x": np.full(100, 2**60, dtype=F32)}, "columnar"),
    ("nested-ints-to-float-through-double", json.dumps({"inputs": [[2**60 + 2**36 + 1], [1]]}),
     sig(x=F32), {"x": np.array([[2**60], [1]], dtype=F32)}, "columnar"),
    ("int-beyond-uint64-to-float", '{"inputs": [100000000000000000000000, 1e39]}', sig(x=F32),
     {"x": np.array([1e23, INF], dtype=F32)}, "columnar"),
    ("ints-beyond-uint64-alone", '{"inputs": [[100000000000000000000000], [-1e40]]}', sig(x=F32),
     {"x": np.array([[1e23], [-INF]], dtype=F32)}, "columnar"),
    ("few-floats-beyond-float32", '{"instances": [1e39, -1e300, 2.5]}', sig(x=F32),
     {"x": np.array([INF, -INF, 2.5], dtype=F32)}, "row"),
    ("many-floats-beyond-float32", json.dumps({"inputs": [1.0] * 98 + [1e300, -1e39]}), sig(x=F32),
     {"x": np.array([1.0] * 98 + [INF, -INF], dtype=F32)}, "columnar"),
    ("nested-floats-beyond-float32", '{"inputs": [[1e39], [2.0]]}', sig(x=F32),
     {"x": np.array([[INF], [2.0]], dtype=F32)}, "columnar"),
    ("bool", '{"instances": [[true, false], [false, false]]}', sig(x=np.bool_),
     {"x": np.array([[True, False], [False, False]])}, "row"),
    ("int-limits", '{"inputs": {"a": [-128, 127], "b": [0, 255], "c": [9223372036854775807],'
     ' "d": [18446744073709551615]}}', sig(a=np.int8, b=np.uint8, c=I64, d=np.uint64),
     {"a": np.array([-128, 127], dtype=np.int8), "b": np.array([0, 255], dtype=np.uint8),
      "c": np.array([2**63 - 1], dtype=I64), "d": np.array([2**64 - 1], dtype=np.uint64)},
     "columnar"),
    ("utf8-strings", '{"instances": ["h\\u00e9llo", "\\u65e5\\u672c", ""]}', sig(x=object),
     {"x": strings("héllo", "日本", "")}, "row"),
    ("b64-unpadded", '{"instances": [{"b64": "aGVsbG8"}]}', sig(x=object),
     {"x": strings("hello")}, "row"),
    ("b64-mixed-with-text", '{"instances": [["a", {"b64": "Yg=="}]]}', sig(x=object),
     {"x": strings("a", "b", shape=(1, 2))}, "row"),
    ("single-input-rows-as-objects", '{"instances": [{"x": [1.0, 2.0]}, {"x": [3.0, 4.0]}]}',
     sig(x=F32), {"x": np.array([[1, 2], [3, 4]], dtype=F32)}, "row"),
    ("empty-list-columnar", '{"inputs": []}', sig(x=I32), {"x": np.zeros((0,), dtype=I32)},
     "columnar"),
    ("empty-rows", '{"instances": [[], []]}', sig(x=object), {"x": strings(shape=(2, 0))},
     "row"),
    ("empty-rows-numeric", '{"instances": [[], []]}', sig(x=F32),
     {"x": np.zeros((2, 0), dtype=F32)}, "row"),
    ("many-ints-to-float", json.dumps({"instances": list(range(200))}), sig(x=F32),
     {"x": np.arange(200, dtype=F32)}, "row"),
    ("many-ints-to-int8", json.dumps({"inputs": [i % 100 for i in range(200)]}),
     sig(x=np.int8), {"x": (np.arange(200) % 100).astype(np.int8)}, "columnar"),
    ("rank-64", '{"inputs": ' + "[" * 64 + "1" + "]" * 64 + "}", sig(x=F32),
     {"x": np.ones((1,) * 64, dtype=F32)}, "columnar"),
    ("many-floats-with-nan", json.dumps({"inputs": [0.5] * 99 + [NAN]}), sig(x=F32),
     {"x": np.array([0.5] * 99 + [NAN], dtype=F32)}, "columnar"),
]


@pytest.mark.parametrize("body, signature, want, form",
                         [case[1:] for case in DECODE_CASES], ids=[c[0] for c in DECODE_CASES])
def test_decode_predict(body: str, signature: SignatureSpec, want: dict[str, np.ndarray],
                        form: str):
    tensors, got_form = decode(body, signature)
    assert got_form == form
    assert_tensors(tensors, want)
    signature.validate(tensors)  # dtypes are exactly the signature's


def test_row_and_columnar_forms_decode_to_the_same_tensors():
    row, _ = decode(DECODE_CASES[0][1], TAG_SIGNAL_SENSOR)
    columnar, _ = decode(DECODE_CASES[1][1], TAG_SIGNAL_SENSOR)
    assert_tensors(row, columnar)


# --- decode_predict: rejected requests -------------------------------------------------

DECODE_ERRORS = [
    # (id, body, signature, message regex)
    ("both-keys", '{"instances": [[1,2]], "inputs": [[1,2]]}', sig(x=I32),
     "Not formatted correctly expecting only one of 'inputs' or 'instances'"),
    ("neither-key", '{"signature_name": "x"}', sig(x=I32), "Missing 'inputs' or 'instances' key"),
    ("instances-not-list", '{"instances": {"x": 1}}', sig(x=I32), "'instances' to be a list"),
    ("instances-empty", '{"instances": []}', sig(x=I32), "No values in 'instances' array"),
    ("plain-list-multiple-inputs", '{"instances": [1, 2]}', sig(a=I32, b=I32),
     "instances is a plain list, but expecting list of objects"),
    ("plain-inputs-multiple-inputs", '{"inputs": [1, 2]}', sig(a=I32, b=I32),
     "inputs is a plain value/list, but expecting an object"),
    ("no-inputs-in-signature", '{"instances": [1]}', sig(), "has no inputs"),
    ("tf-ragged-size", '{"instances": [[1,2],[3,4],[5,6,7]]}', sig(x=I32),
     r"element: 2 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 but got: 3"),
    ("tf-ragged-shape", '{"instances": [[1,2],[3,4],[[5,6]]]}', sig(x=I32),
     r"element: 2 .* Expecting shape \[2\] but got: \[1,2\]"),
    ("tf-scalar-then-list", '{"instances": [1, [1]]}', sig(x=I32), "Expecting shape"),
    ("ragged-strings", '{"instances": [["a"], ["b", "c"]]}', sig(x=object),
     "Expecting tensor size: 1 but got: 2"),
    ("ragged-inside-row", '{"instances": [[[1], [2, 3]]]}', sig(x=F32),
     "Encountered list at unexpected size: 2 at level: 1 expected size: 1"),
    ("ragged-columnar", '{"inputs": [[1, 2], [3]]}', sig(x=F32),
     "input: x of 'inputs' object. Error: Encountered list at unexpected size: 1"),
    ("list-too-deep", '{"inputs": [[1], [[2]]]}', sig(x=F32),
     "Encountered list at unexpected level: 2 expected < 2"),
    ("value-too-shallow", '{"inputs": [[1], 2]}', sig(x=F32),
     "JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
    ("tf-string-for-int", '{"instances": [[1,2],["a", "b"]]}', sig(x=I32),
     r'JSON Value: "a" Type: String is not of expected type: int32'),
    ("string-for-float-named-row", '{"instances": [{"age": "old"}]}', sig(age=F32),
     r'element: 0 key: age .*"old" Type: String is not of expected type: float'),
    ("string-for-float-columnar", '{"inputs": {"age": ["1.5"]}}', sig(age=F32),
     r'input: age .*"1.5" Type: String is not of expected type: float'),
    ("number-for-string", '{"instances": [{"tag": 5}]}', sig(tag=object),
     "key: tag .*JSON Value: 5 Type: Number is not of expected type: string"),
    ("number-for-string-columnar", '{"inputs": {"tag": [1.5]}}', sig(tag=object),
     "input: tag .*Type: Number is not of expected type: string"),
    ("bool-for-string", '{"inputs": [true]}', sig(tag=object), "Type: True is not of expected"),
    ("null-for-float", '{"instances": [1.0, null]}', sig(x=F32),
     "element: 1 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: null Type: Null"),
    ("bool-for-float", '{"instances": [true, false]}', sig(x=F32),
     "Type: True is not of expected type: float"),
    ("number-for-bool", '{"instances": [true, 1]}', sig(x=np.bool_),
     "JSON Value: 1 Type: Number is not of expected type: bool"),
    ("decimal-for-int", '{"instances": [1, 1.5]}', sig(x=I32),
     "JSON Value: 1.5 Type: Number is not of expected type: int32"),
    ("whole-decimal-for-int", '{"instances": [1.0]}', sig(x=I64),
     "JSON Value: 1.0 Type: Number is not of expected type: int64"),
    ("object-for-float", '{"inputs": {"x": [{"b64": "AA=="}]}}', sig(x=F32),
     "Type: Object is not of expected type: float"),
    ("b64-object-for-float-columnar", '{"inputs": {"b64": "AA=="}}', sig(x=F32),
     "Type: Object is not of expected type: float"),
    # beyond rapidjson's IsInt, IsInt64, IsUint, IsUint64 (json_tensor.cc's AddValueToTensor):
    # TF Serving's type error
    ("int32-overflow", '{"instances": [1, 2147483648]}', sig(x=I32),
     r"^Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: 2147483648 "
     r"Type: Number is not of expected type: int32$"),
    ("int32-underflow", '{"inputs": {"x": [-2147483649]}}', sig(x=I32),
     r"JSON Value: -2147483649 Type: Number is not of expected type: int32$"),
    ("int8-beyond-int32", '{"inputs": [1, 2147483648]}', sig(x=np.int8),
     r"JSON Value: 2147483648 Type: Number is not of expected type: int8$"),
    ("uint32-negative", '{"inputs": [-1]}', sig(x=np.uint32),
     r"JSON Value: -1 Type: Number is not of expected type: uint32$"),
    ("uint32-overflow", '{"inputs": [4294967296]}', sig(x=np.uint32), r"expected type: uint32$"),
    ("uint64-negative", '{"inputs": [-1]}', sig(x=np.uint64), r"expected type: uint64$"),
    ("int64-overflow", '{"instances": [9223372036854775808]}', sig(x=I64), r"expected type: int64$"),
    ("int64-overflow-mixed-sign", '{"instances": [-1, 9223372036854775808]}', sig(x=I64),
     r"JSON Value: 9223372036854775808 Type: Number is not of expected type: int64$"),
    ("huge-int", '{"instances": [100000000000000000000000]}', sig(x=I64),
     "is not of expected type: int64$"),
    # within IsInt but beyond int8, int16, uint8: TF Serving would wrap it around (int_val is
    # 32 bits; Tensor::FromProto casts), the codec refuses it, saying the range
    ("uint8-overflow", '{"instances": [255, 256]}', sig(x=np.uint8),
     r"JSON Value: 256 Type: Number is not of expected type: uint8 \(out of range \[0, 255\]\)$"),
    ("uint8-negative", '{"instances": [-1]}', sig(x=np.uint8), r"-1 .*uint8 \(out of range"),
    ("int16-overflow", '{"inputs": [40000]}', sig(x=np.int16), r"int16 \(out of range \[-32768, 32767\]\)$"),
    ("many-ints-int8-overflow", json.dumps({"inputs": list(range(200))}), sig(x=np.int8),
     "JSON Value: 128 .*out of range"),
    ("tf-object-then-list", """{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]},
        [1, 20, 30]]}""", sig(int_tensor=I32, str_tensor=object),
     "Expecting object but got value/list at item 1"),
    ("tf-list-then-object", '{"instances": [["baz", "bar"], {"str_tensor": ["baz", "bat"]}]}',
     sig(str_tensor=object), "Expecting value/list but got object at item 1"),
    ("tf-named-rows-shape", """{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]},
        {"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]}""",
     sig(int_tensor=I32, str_tensor=object),
     r"element: 1 key: int_tensor .*Expecting shape \[3,2\] but got: \[1,3,2\]"),
    ("tf-named-rows-size", """{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6],[7,8]], "str_tensor": ["foo", "bar"]},
        {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"]}]}""",
     sig(int_tensor=I32, str_tensor=object), "Expecting tensor size: 8 but got: 6"),
    ("rows-with-different-keys", '{"instances": [{"a": 1, "b": 2}, {"a": 1}]}', sig(a=I32, b=I32),
     "Failed to process element: 1 of 'instances' list.*keys must be equal to: a,b"),
    ("unknown-named-input-row", '{"instances": [{"x": 1, "nope": 2}]}', sig(x=I32),
     r"Unknown input\(s\) \['nope'\] for signature 'serving_default'; expected \['x'\]"),
    ("unknown-named-input-columnar", '{"inputs": {"nope": [1]}}', sig(x=I32, y=I32),
     r"Unknown input\(s\) \['nope'\]"),
    ("bad-b64", '{"instances": [{"b64": "!!!!"}]}', sig(x=object), "Unable to base64 decode"),
    ("b64-not-a-string", '{"instances": [[{"b64": 5}]]}', sig(x=object),
     "not formatted correctly for base64 data"),
    ("b64-extra-key", '{"inputs": [{"b64": "AA==", "x": 1}]}', sig(x=object),
     "not formatted correctly for base64 data"),
    ("lone-surrogate", '{"instances": ["\\ud800"]}', sig(x=object), "not valid Unicode"),
    ("rank-above-numpy-limit", '{"inputs": ' + "[" * 65 + "1" + "]" * 65 + "}", sig(x=F32),
     "rank is above the maximum of 64"),
    ("row-rank-above-numpy-limit", '{"instances": ' + "[" * 65 + '"a"' + "]" * 65 + "}",
     sig(x=object), "rank 65 is above the maximum of 64"),
]


@pytest.mark.parametrize("body, signature, message",
                         [case[1:] for case in DECODE_ERRORS], ids=[c[0] for c in DECODE_ERRORS])
def test_decode_predict_errors(body: str, signature: SignatureSpec, message: str):
    with pytest.raises(InvalidArgument, match=message):
        decode(body, signature)


# --- decode_predict: types TF Serving does not convert JSON to -------------------------------

UNCONVERTIBLE = [  # numpy's dtype, TensorFlow's name (as signatures hold it), DataTypeString
    (np.float16, "DT_HALF", "half"), (ml_dtypes.bfloat16, "DT_BFLOAT16", "bfloat16"),
    (np.uint16, "DT_UINT16", "uint16"), (np.complex64, "DT_COMPLEX64", "complex64"),
    (np.complex128, "DT_COMPLEX128", "complex128"), (np.complex64, "", "complex64"),
    (object, "DT_VARIANT", "variant"),  # a variant's numpy dtype is object, as a string's
]
IDS = [f"{name}-{dt_name or 'unnamed'}" for _, dt_name, name in UNCONVERTIBLE]


def typed(dtype: Any, dt_name: str) -> SignatureSpec:
    spec = TensorSpec("x", np.dtype(dtype), None, dt_name)
    return SignatureSpec("serving_default", PREDICT, {"x": spec}, {}, ("x",))


@pytest.mark.parametrize("dtype, dt_name, name", UNCONVERTIBLE, ids=IDS)
@pytest.mark.parametrize("body, value", [
    ('{"inputs": [1.5, 2]}', "1.5"), ('{"inputs": {"x": [[2], [3]]}}', "2"), ('{"inputs": ["a"]}', '"a"'),
    ('{"inputs": null}', "null"), ('{"inputs": [[true]]}', "true"), ('{"inputs": [NaN]}', "NaN"),
])
def test_a_type_tf_serving_does_not_convert_is_unimplemented_in_columns(dtype, dt_name, name, body, value):
    """json_tensor.cc's AddValueToTensor has no case for it: Unimplemented (501) at the first
    value, returned as it is by FillTensorMapFromInputsMap."""
    with pytest.raises(Unimplemented, match=f"^Conversion of JSON Value: {re.escape(value)} to type: {name}$"):
        decode(body, typed(dtype, dt_name))


@pytest.mark.parametrize("dtype, dt_name, name", UNCONVERTIBLE, ids=IDS)
@pytest.mark.parametrize("body, where, value", [
    ('{"instances": [1.5, 2]}', "element: 0", "1.5"), ('{"instances": [{"x": "a"}]}', "element: 0 key: x", '"a"'),
    ('{"instances": [[], [7]]}', "element: 1", "7"),
])
def test_a_type_tf_serving_does_not_convert_is_invalid_argument_in_rows(dtype, dt_name, name, body, where, value):
    """FillTensorMapFromInstancesList wraps every error of a row as INVALID_ARGUMENT (400),
    quoting it with absl::Status::ToString (its code first)."""
    with pytest.raises(InvalidArgument, match=f"^Failed to process {where} of 'instances' list. Error: UNIMPLEMENTED: "
                                              f"Conversion of JSON Value: {re.escape(value)} to type: {name}$"):
        decode(body, typed(dtype, dt_name))


@pytest.mark.parametrize("dtype, dt_name, name", UNCONVERTIBLE, ids=IDS)
def test_a_type_tf_serving_does_not_convert_is_refused_only_for_a_value(dtype, dt_name, name):
    """No value, nothing to convert: TF Serving makes the empty tensor. Before the first
    value, the shape is checked; an object is a type error (FillTensorProto)."""
    tensors, _ = decode('{"inputs": []}', typed(dtype, dt_name))
    assert tensors["x"].shape == (0,) and tensors["x"].dtype == np.dtype(dtype)
    tensors, _ = decode('{"instances": [[], []]}', typed(dtype, dt_name))
    assert tensors["x"].shape == (2, 0) and tensors["x"].dtype == np.dtype(dtype)
    with pytest.raises(InvalidArgument, match="Encountered list at unexpected size: 1 at level: 1 expected size: 0"):
        decode('{"inputs": [[], [1]]}', typed(dtype, dt_name))
    with pytest.raises(InvalidArgument, match=f'JSON Value: {{"b64":"AA=="}} Type: Object is not of expected type: '
                                              f'{name}$'):
        decode('{"inputs": [{"b64": "AA=="}]}', typed(dtype, dt_name))


def test_decode_predict_leaves_name_checks_to_the_signature():
    tensors, _ = decode('{"inputs": {"a": [1]}}', sig(a=I32, b=I32))
    assert list(tensors) == ["a"]
    with pytest.raises(InvalidArgument, match="Missing input"):
        sig(a=I32, b=I32).validate(tensors)


# --- encode_predict --------------------------------------------------------------------

INT_2x3x2 = np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], dtype=I32)
MULTI = {
    "int_tensor": INT_2x3x2,
    "str_tensor": strings("foo", "bar", "baz", "bat", shape=(2, 2)),
    "float_tensor": np.array([[1.0], [2.0]], dtype=F32),
    "double_scalar_tensor": np.array([8.0, 9.0], dtype=F64),
    "str_tensor_bytes": strings("hello", "world", "tf", "serving", shape=(2, 2)),
}
HELLO_WORLD_B64 = [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]
TF_SERVING_B64 = [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]

ENCODE_CASES = [
    # (id, outputs, form, expected JSON document)
    ("tf-single-row", {"int_tensor": INT_2x3x2}, "row",
     {"predictions": INT_2x3x2.tolist()}),
    ("tf-single-columnar", {"int_tensor": INT_2x3x2}, "columnar",
     {"outputs": INT_2x3x2.tolist()}),
    ("tf-scalars-row", {"x": np.arange(1, 6, dtype=I32)}, "row", {"predictions": [1, 2, 3, 4, 5]}),
    ("tf-scalars-columnar", {"x": np.arange(1, 6, dtype=I32)}, "columnar",
     {"outputs": [1, 2, 3, 4, 5]}),
    ("tf-bytes-row", {"str_tensor_bytes": MULTI["str_tensor_bytes"]}, "row",
     {"predictions": [HELLO_WORLD_B64, TF_SERVING_B64]}),
    ("tf-multiple-row", MULTI, "row", {"predictions": [
        {"int_tensor": [[1, 2], [3, 4], [5, 6]], "str_tensor": ["foo", "bar"],
         "float_tensor": [1.0], "double_scalar_tensor": 8.0, "str_tensor_bytes": HELLO_WORLD_B64},
        {"int_tensor": [[7, 8], [9, 0], [1, 2]], "str_tensor": ["baz", "bat"],
         "float_tensor": [2.0], "double_scalar_tensor": 9.0, "str_tensor_bytes": TF_SERVING_B64},
    ]}),
    ("tf-multiple-columnar", MULTI, "columnar", {"outputs": {
        "int_tensor": INT_2x3x2.tolist(), "str_tensor": [["foo", "bar"], ["baz", "bat"]],
        "float_tensor": [[1.0], [2.0]], "double_scalar_tensor": [8.0, 9.0],
        "str_tensor_bytes": [HELLO_WORLD_B64, TF_SERVING_B64]}}),
    ("tf-zero-batch", {"x": np.zeros((0, 2), dtype=I32)}, "row", {"predictions": []}),
    ("tf-multiple-zero-batch", {"s": np.empty((0, 1, 2), dtype=object),
                                "f": np.zeros((0, 3, 4), dtype=F32)}, "row", {"predictions": []}),
    ("scalar-columnar", {"x": np.array(8.5, dtype=F32)}, "columnar", {"outputs": 8.5}),
    ("string-scalar-columnar", {"x": strings("hi", shape=())}, "columnar", {"outputs": "hi"}),
    ("bool-and-int64", {"b": np.array([True, False]), "i": np.array([2**62, -1], dtype=I64)},
     "row", {"predictions": [{"b": True, "i": 2**62}, {"b": False, "i": -1}]}),
    ("unsigned", {"u": np.array([2**64 - 1], dtype=np.uint64)}, "columnar",
     {"outputs": [2**64 - 1]}),
    ("non-utf8-string-becomes-b64", {"s": strings(b"ok", b"\xff\xfe")}, "row",
     {"predictions": ["ok", {"b64": "//4="}]}),
    ("utf8-string", {"s": strings("日本")}, "row", {"predictions": ["日本"]}),
    ("non-contiguous", {"x": np.arange(6, dtype=F32).reshape(2, 3).T}, "row",
     {"predictions": [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]}),
    ("big-endian", {"x": np.array([1.5, 2.5], dtype=">f4")}, "columnar", {"outputs": [1.5, 2.5]}),
    ("float16", {"x": np.array([0.5, 2.0], dtype=np.float16)}, "columnar",
     {"outputs": [0.5, 2.0]}),
    ("name-containing-null", {"nullable": np.array([1.0], dtype=F32),
                              "other": np.array([2], dtype=I32)}, "row",
     {"predictions": [{"nullable": 1.0, "other": 2}]}),
]


@pytest.mark.parametrize("outputs, form, want",
                         [case[1:] for case in ENCODE_CASES], ids=[c[0] for c in ENCODE_CASES])
def test_encode_predict(outputs: dict[str, np.ndarray], form: str, want: dict[str, Any]):
    assert json.loads(codec.encode_predict(outputs, form)) == want


@pytest.mark.parametrize("values, text", [
    ([3.5, 4.0, 5.5], b"[3.5,4.0,5.5]"),  # api_rest.md's half_plus_three answer
    ([0.1, 0.2, 1 / 3], b"[0.1,0.2,0.33333334]"),  # float32's shortest round trip
    ([9000000, 999999, 0.5, 0.0003, 0.00003, 555557.5],
     b"[9000000.0,999999.0,0.5,0.0003,0.00003,555557.5]"),
    ([3.0, -0.0, 16777216.0], b"[3.0,-0.0,16777216.0]"),
])
def test_encode_float32_is_shortest_round_trip(values: list[float], text: bytes):
    body = codec.encode_predict({"y": np.array(values, dtype=F32)}, "row")
    assert body == b'{"predictions":' + text + b"}"
    assert np.array_equal(np.array(json.loads(body)["predictions"], dtype=F32),
                          np.array(values, dtype=F32))


def test_encode_float64_is_shortest_round_trip():
    body = codec.encode_predict({"y": np.array([0.1, 1 / 3], dtype=F64)}, "columnar")
    assert body == b'{"outputs":[0.1,0.3333333333333333]}'


@pytest.mark.parametrize("dtype", [F32, F64, np.float16])
def test_encode_non_finite_floats_as_tokens(dtype: type):
    outputs = {"float_tensor": np.array([[NAN, INF], [3, -INF]], dtype=dtype)}
    body = codec.encode_predict(outputs, "row")
    assert body == b'{"predictions":[[NaN,Infinity],[3.0,-Infinity]]}'
    nan, inf, three, neg = np.ravel(codec.parse_json(body)["predictions"])
    assert math.isnan(nan) and (inf, three, neg) == (INF, 3.0, -INF)


def test_encode_non_finite_keeps_float32_shortest_repr_and_other_outputs():
    outputs = {"a": np.array([0.1, NAN], dtype=F32), "b": strings("x", "y")}
    assert codec.encode_predict(outputs, "row") == (
        b'{"predictions":[{"a":0.1,"b":"x"},{"a":NaN,"b":"y"}]}')
    assert codec.encode_predict(outputs, "columnar") == (
        b'{"outputs":{"a":[0.1,NaN],"b":["x","y"]}}')


def test_encode_non_finite_scalar_columnar():
    assert codec.encode_predict({"x": np.array(NAN, dtype=F32)}, "columnar") == b'{"outputs":NaN}'


@pytest.mark.parametrize("outputs, form, message", [
    ({}, "row", "Cannot convert empty tensor map to JSON"),
    ({"int_tensor": np.zeros((2, 3), dtype=I32),
      "str_tensor": strings("a", "b", "c", shape=(1, 3))},
     "row", "Tensor name: str_tensor has inconsistent batch size: 1 expecting: 2"),
    ({"int_tensor": np.zeros((0, 2), dtype=I32), "str_tensor": strings("a", "b", shape=(1, 2))},
     "row", "inconsistent batch size"),
    ({"tensor": np.array(1, dtype=I32)}, "row", "Tensor name: tensor has no shape information"),
    ({"tensor": np.array([1 + 2j], dtype=np.complex64)}, "row",
     "Failed to write JSON value for tensor type: complex64"),
])
def test_encode_predict_errors(outputs: dict[str, np.ndarray], form: str, message: str):
    with pytest.raises(InvalidArgument, match=message):
        codec.encode_predict(outputs, form)


@pytest.mark.parametrize("body, signature", [
    (DECODE_CASES[0][1], TAG_SIGNAL_SENSOR),
    ('{"instances": [{"b64": "aGVsbG8="}]}', sig(data_bytes=object)),
    ('{"inputs": [[1.5, NaN], [Infinity, -Infinity]]}', sig(x=F32)),
])
def test_predict_round_trip(body: str, signature: SignatureSpec):
    """Echoing the decoded inputs as outputs gives the request back in the same form."""
    tensors, form = decode(body, signature)
    echoed = codec.encode_predict(tensors, form)
    key = "instances" if form == "row" else "inputs"
    want = codec.parse_json(body.encode())[key]
    got = codec.parse_json(echoed)["predictions" if form == "row" else "outputs"]
    assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)


# --- decode_examples -------------------------------------------------------------------


def parse_examples(serialized: list[bytes]) -> list[dict[str, tuple[str, list[Any]]]]:
    """Each example as {feature: (kind, values)}."""
    from tensorflow.core.example import example_pb2

    parsed = []
    for data in serialized:
        example = example_pb2.Example.FromString(data)
        features = {}
        for name, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            features[name] = (kind, list(getattr(feature, kind).value) if kind else [])
        parsed.append(features)
    return parsed


def test_examples_without_context():
    serialized = codec.decode_examples({"examples": [
        {"names": ["foo", "bar"], "ratings": [8.0, 9.0], "age": 20},
        {"names": ["baz"], "ratings": 6.0},
    ]})
    assert parse_examples(serialized) == [
        {"names": ("bytes_list", [b"foo", b"bar"]), "ratings": ("float_list", [8.0, 9.0]),
         "age": ("int64_list", [20])},
        {"names": ("bytes_list", [b"baz"]), "ratings": ("float_list", [6.0])},
    ]


def test_examples_with_context_nan_b64_and_bools():
    doc = codec.parse_json(b"""{
      "signature_name": "custom_signture",
      "context": {"query": "pizza", "location": ["sfo"]},
      "examples": [
        {"names": ["foo", "bar"], "ratings": [8.0, 9.0, NaN, Infinity], "age": 20},
        {"names": ["baz", {"b64": "aGVsbG8="}], "ratings": 6.0, "intboolmix": [1, true, false]},
        {"names": "bar", "ratings": -Infinity}
      ]}""")
    parsed = parse_examples(codec.decode_examples(doc))
    context = {"query": ("bytes_list", [b"pizza"]), "location": ("bytes_list", [b"sfo"])}
    first_ratings = parsed[0].pop("ratings")
    assert first_ratings[0] == "float_list" and first_ratings[1][:2] == [8.0, 9.0]
    assert math.isnan(first_ratings[1][2]) and first_ratings[1][3] == INF
    assert parsed == [
        {**context, "names": ("bytes_list", [b"foo", b"bar"]), "age": ("int64_list", [20])},
        {**context, "names": ("bytes_list", [b"baz", b"hello"]),
         "ratings": ("float_list", [6.0]), "intboolmix": ("int64_list", [1, 1, 0])},
        {**context, "names": ("bytes_list", [b"bar"]), "ratings": ("float_list", [-INF])},
    ]


def test_examples_context_is_prepended_like_tf_serving():
    from tensorflow.core.example import example_pb2

    with_context = codec.decode_examples({"context": {"c": 1}, "examples": [{"x": 2.5}]})
    context, example = (codec.decode_examples({"examples": [doc]})[0]
                        for doc in ({"c": 1}, {"x": 2.5}))
    assert with_context == [context + example]
    merged = example_pb2.Example.FromString(with_context[0]).features.feature
    assert merged["c"].int64_list.value == [1] and merged["x"].float_list.value == [2.5]


def test_examples_doc_image_caption_b64():
    doc = {"signature_name": "classify_objects", "examples": [
        {"image": {"b64": "aW1hZ2UgYnl0ZXM="}, "caption": "seaside"},
        {"image": {"b64": "YXdlc29tZSBpbWFnZSBieXRlcw=="}, "caption": "mountains"},
    ]}
    assert parse_examples(codec.decode_examples(doc)) == [
        {"image": ("bytes_list", [b"image bytes"]), "caption": ("bytes_list", [b"seaside"])},
        {"image": ("bytes_list", [b"awesome image bytes"]),
         "caption": ("bytes_list", [b"mountains"])},
    ]


@pytest.mark.parametrize("value, feature", [
    (2.0, ("float_list", [2.0])),  # half_plus_two's {"x": 2.0}
    (-5, ("int64_list", [-5])),
    ([1e3, 2.5e-1], ("float_list", [1000.0, 0.25])),
    # float_list takes the double static_cast to float (TF Serving 2.10+: no precision check)
    ([1435774380.0, 1.7976931348623157e308, -1e39], ("float_list", [1435774336.0, INF, -INF])),
    ([9223372036854775807], ("int64_list", [2**63 - 1])),
    # an integer beyond int64 and uint64 is a double to rapidjson (and orjson): a float
    ([-(2**63) - 1], ("float_list", [-(2.0**63)])), ([2**64, 1.5], ("float_list", [2.0**64, 1.5])),
    ([True, False, 7], ("int64_list", [1, 0, 7])),
    ("héllo", ("bytes_list", ["héllo".encode()])),
    ([], (None, [])),
])
def test_example_feature_kinds(value: Any, feature: tuple[str, list[Any]]):
    assert parse_examples(codec.decode_examples({"examples": [{"f": value}]})) == [{"f": feature}]


@pytest.mark.parametrize("doc, message", [
    ({"signature_name": "x"}, "key 'examples' is expected and was not found"),
    ({"examples": {"names": ["foo"]}}, "'examples' value to be a list/array"),
    ({"examples": []}, "'examples' value is an empty array"),
    ({"context": [{"names": ["foo"]}], "examples": [{}]},
     "'context' must be JSON object but got JSON Array"),
    ({"context": None, "examples": [{}]}, "'context' must be JSON object but got JSON Null"),
    ({"examples": [[{"names": ["foo", "bar"]}]]}, "Example must be JSON object but got JSON Array"),
    ({"examples": [{"names": [10, None]}]}, "names has element with unexpected JSON type: Null"),
    ({"examples": [{"names": [10, {"test": 10}]}]},
     "names has element with unexpected JSON type: Object"),
    ({"examples": [{"names": [[10], 20]}]}, "names has element with unexpected JSON type: Array"),
    # json_tensor_test.cc's JsonErrors for classify and regress, then the same rules: the first
    # value's kind is the feature's (AddValueToFeature's IsFeatureOfKind)
    ({"examples": [{"names": [20, 18446744073709551603]}]},
     r"^Feature: names has uint64_t element. Only int64_t is supported.$"),
    ({"examples": [{"names": [10, 10.0]}]}, "^Unexpected element type in feature: names expecting type: int64$"),
    ({"examples": [{"names": [1.5, 16777217]}]}, "^Unexpected element type in feature: names expecting type: float$"),
    ({"examples": [{"names": [True, 1.5]}]}, "^Unexpected element type in feature: names expecting type: int64$"),
    ({"examples": [{"names": [1.5, 18446744073709551603]}]}, "expecting type: float$"),
    ({"examples": [{"names": [1, {"b64": "%%"}]}]}, "expecting type: int64$"),
    ({"examples": [{"names": ["a", 1, None]}]}, "expecting type: bytes$"),
    ({"examples": [{"names": ["a", {"b64": "%%"}]}]}, "Unable to base64 decode"),
    ({"examples": [{"names": ["a", 1]}]},
     "Unexpected element type in feature: names expecting type: bytes"),
    ({"examples": [{"names": [1, "a"]}]},
     "Unexpected element type in feature: names expecting type: int64"),
    ({"examples": [{"names": [1.5, True]}]},
     "Unexpected element type in feature: names expecting type: float"),
    ({"examples": [{"names": {"b64": "%%"}}]}, "Unable to base64 decode"),
    ({"context": {"query": "pizza"}, "examples": [{"x": 1}, {"query": "pasta"}]},
     r"Feature\(s\) \['query'\] of example 1 also appear in 'context'"),
])
def test_decode_examples_errors(doc: dict[str, Any], message: str):
    with pytest.raises(InvalidArgument, match=message):
        codec.decode_examples(doc)


# --- encode_classify / encode_regress (checks: tests/core/test_results.py) / encode_error ---


@pytest.mark.parametrize("outputs, want", [
    ({"scores": np.array([[3.0]], dtype=F32)}, b'{"results":[[["",3.0]]]}'),  # half_plus_two
    ({"classes": strings("car", "bike", "bus", "car", "bike", "bus", shape=(2, 3)),
      "scores": np.array([[0.2, 0.7, 0.1], [0.7, 0.1, 0.2]], dtype=F32)},
     b'{"results":[[["car",0.2],["bike",0.7],["bus",0.1]],'
     b'[["car",0.7],["bike",0.1],["bus",0.2]]]}'),
    ({"classes": strings("a", "b", shape=(2, 1))}, b'{"results":[[["a",0.0]],[["b",0.0]]]}'),
    ({"scores": np.array([[NAN, INF]], dtype=F32)}, b'{"results":[[["",NaN],["",Infinity]]]}'),
    ({"classes": strings(b"\xff", shape=(1, 1)), "scores": np.array([[1]], dtype=F32)},
     '{"results":[[["\ufffd",1.0]]]}'.encode()),
])
def test_encode_classify(outputs: dict[str, np.ndarray], want: bytes):
    rows = next(iter(outputs.values())).shape[0]
    assert codec.encode_classify(classifications(outputs, rows)) == want


@pytest.mark.parametrize("values, want", [
    (np.array([3.0], dtype=F32), b'{"results":[3.0]}'),  # half_plus_two regress of x=2.0
    (np.array([[3.5], [4.0]], dtype=F32), b'{"results":[3.5,4.0]}'),  # api_rest.md's example
    (np.array([0.2, 0.9, 1.0], dtype=F32), b'{"results":[0.2,0.9,1.0]}'),
    (np.array([0.2, INF, 1.0, -INF, NAN], dtype=F32),
     b'{"results":[0.2,Infinity,1.0,-Infinity,NaN]}'),
])
def test_encode_regress(values: np.ndarray, want: bytes):
    assert codec.encode_regress(regressions({"outputs": values}, values.shape[0])) == want


def test_empty_results_are_not_encoded():
    with pytest.raises(InvalidArgument, match="empty ClassificationResults"):
        codec.encode_classify(classifications({"scores": np.zeros((0, 2), dtype=F32)}, 0))
    with pytest.raises(InvalidArgument, match="empty RegressionResults"):
        codec.encode_regress(regressions({"outputs": np.zeros((0,), dtype=F32)}, 0))


@pytest.mark.parametrize("message", ['Bad key: "key"', "Bad key: 'key'", "caf\u00e9", "\ud800"])
def test_encode_error(message: str):
    assert json.loads(codec.encode_error(message)) == {"error": message}


# --- the hot path ----------------------------------------------------------------------

NATALITY = sig(is_male=object, mother_age=F32, plurality=object, gestation_weeks=F32)
NATALITY_BODY = (b'{"instances":[{"is_male":"True","mother_age":25.0,'
                 b'"plurality":"Single(1)","gestation_weeks":39.0}]}')


def test_one_row_four_inputs_round_trip():
    """Correctness only; its speed is measured by ``python -m loadtests.benchmarks.bench_codec``."""
    tensors, form = codec.decode_predict(codec.parse_json(NATALITY_BODY), NATALITY)
    assert form == "row"
    assert_tensors(tensors, {
        "is_male": strings("True"), "mother_age": np.array([25.0], dtype=F32),
        "plurality": strings("Single(1)"), "gestation_weeks": np.array([39.0], dtype=F32),
    })
    assert NATALITY.validate(tensors) == 1
    assert codec.encode_predict({"weight": np.array([[7.25]], dtype=F32)}, form) == b'{"predictions":[[7.25]]}'


# --- the bulk fast paths: same tensors, same errors at the same place ------------------

NATALITY_ROW = {"is_male": "True", "mother_age": 25.0, "plurality": "Single(1)",
                "gestation_weeks": 39.0}


def rows_body(rows: list[Any]) -> str:
    return json.dumps({"instances": rows})


def natality_rows(n: int = 512) -> list[Any]:
    return [dict(NATALITY_ROW, mother_age=20.0 + i % 20) for i in range(n)]


def test_large_row_request_decodes_every_row():
    tensors, _ = decode(rows_body(natality_rows()), NATALITY)
    assert NATALITY.validate(tensors) == 512
    assert tensors["is_male"].dtype == object and tensors["is_male"][511] == b"True"
    np.testing.assert_array_equal(tensors["mother_age"], [20.0 + i % 20 for i in range(512)])


@pytest.mark.parametrize("changes, message", [
    ({"is_male": 5}, "JSON Value: 5 Type: Number is not of expected type: string"),
    ({"is_male": None}, "JSON Value: null Type: Null is not of expected type: string"),
    ({"plurality": ["Single(1)"]}, r"Expecting shape \[\] but got: \[1\]"),
    ({"plurality": "\ud800"}, "JSON Value: .* is not valid Unicode"),
    ({"mother_age": "25"}, 'JSON Value: "25" Type: String is not of expected type: float'),
    ({"gestation_weeks": [39.0]}, r"Expecting shape \[\] but got: \[1\]"),
], ids=["number-for-string", "null-for-string", "list-for-scalar-string", "lone-surrogate",
        "string-for-float", "list-for-scalar-float"])
def test_bad_value_at_row_400_of_512_is_reported_there(changes: dict[str, Any], message: str):
    (key,) = changes
    rows = natality_rows()
    rows[400] = {**rows[400], **changes}
    with pytest.raises(InvalidArgument, match=f"element: 400 key: {key} of 'instances' list. "
                                              f"Error: INVALID_ARGUMENT: {message}"):
        decode(rows_body(rows), NATALITY)


@pytest.mark.parametrize("row, message", [
    ([1.0], "Expecting object but got value/list at item 400 of input list"),
    ({"b64": "AA=="}, "Expecting object but got value/list at item 400 of input list"),
    ("True", "Expecting object but got value/list at item 400 of input list"),
    (dict(NATALITY_ROW, extra=1), "element: 400 of 'instances' list.*keys must be equal to"),
    ({k: v for k, v in NATALITY_ROW.items() if k != "plurality"}, "element: 400 .*keys must be"),
])
def test_bad_row_at_400_of_512_is_reported_there(row: Any, message: str):
    rows = natality_rows()
    rows[400] = row
    with pytest.raises(InvalidArgument, match=message):
        decode(rows_body(rows), NATALITY)


def test_an_input_named_b64_still_tells_a_b64_row_from_an_object():
    tensors, _ = decode('{"instances": [{"b64": 5}, {"b64": 6}]}', sig(b64=I32))
    assert_tensors(tensors, {"b64": np.array([5, 6], dtype=I32)})
    with pytest.raises(InvalidArgument, match="Expecting object but got value/list at item 1"):
        decode('{"instances": [{"b64": 5}, {"b64": "AA=="}]}', sig(b64=I32))


@pytest.mark.parametrize("body, signature, want", [
    ('{"instances": ["a", {"b64": "AA=="}, "c"]}', sig(x=object), strings("a", b"\0", "c")),
    ('{"inputs": [[{"b64": "YQ=="}, "b"], ["c", "d"]]}', sig(x=object),
     strings(b"a", "b", "c", "d", shape=(2, 2))),
    ('{"instances": [[["a"], ["b"]], [["c"], ["d"]]]}', sig(x=object),
     strings("a", "b", "c", "d", shape=(2, 2, 1))),
    ('{"inputs": "caf\u00e9"}', sig(x=object), strings("caf\u00e9", shape=())),
    ('{"inputs": [[], []]}', sig(x=object), np.empty((2, 0), dtype=object)),
    ('{"instances": [1, 2.5, 3]}', sig(x=F32), np.array([1, 2.5, 3], dtype=F32)),
    ('{"instances": [[1, 2.5], [3, 4]]}', sig(x=F64), np.array([[1, 2.5], [3, 4]], dtype=F64)),
    ('{"inputs": [true, false]}', sig(x=np.bool_), np.array([True, False])),
], ids=["b64-among-strings", "b64-nested-columnar", "strings-None-k-1", "scalar-string",
        "empty-rows", "mixed-int-float", "mixed-int-float-nested", "bools"])
def test_bulk_decoding_edge_cases(body: str, signature: SignatureSpec, want: np.ndarray):
    tensors, _ = decode(body, signature)
    assert_tensors(tensors, {"x": want})


@pytest.mark.parametrize("instances, message", [
    ([["a", "b"]] * 400 + [["a"]] + [["a", "b"]] * 111, "element: 400 .*Expecting tensor size: 2"),
    ([["a"]] * 400 + [[["a"]]] + [["a"]] * 111, r"element: 400 .*Expecting shape \[1\] but got"),
    ([["a"]] * 400 + [[{"b64": "!"}]] + [["a"]] * 111, "element: 400 .*Unable to base64 decode"),
    ([["a"]] * 400 + [[{"x": 1}]] + [["a"]] * 111, "element: 400 .*not formatted correctly"),
], ids=["ragged-size", "ragged-depth", "bad-b64", "object-for-b64"])
def test_nested_string_rows_report_the_bad_row(instances: list[Any], message: str):
    with pytest.raises(InvalidArgument, match=message):
        decode(rows_body(instances), sig(x=object))
