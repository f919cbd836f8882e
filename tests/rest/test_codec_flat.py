"""The codec's shortcuts for flat lists of scalars (``_few``: up to ``_FEW`` values of any
dtype through the checked path's leaves; ``_flat_numbers``: longer lists of numbers packed
by ``struct``) agree with the general fast paths and the checked path: the same tensor where
those accept, nothing where they refuse, and so the same error at the same row.

The general fast paths (``_fast_numeric``, ``_fast_strings``) and the checked path
(``_walk`` + the leaves) are what decoded every flat list before the shortcuts; the
shortcuts may only answer sooner.
"""
from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest

from serving.errors import InvalidArgument
from serving.rest import codec
from serving.runtime.signature import DT_NAMES, PREDICT, STRING, SignatureSpec, TensorSpec

DTYPES = [dt for dt, name in DT_NAMES.items() if name in codec._TF_JSON_TYPES]
"""The dtypes TF Serving's AddValueToTensor converts JSON to (not half, not uint16)."""
NUMERIC = [dt for dt in DTYPES if dt != STRING and dt.kind != "b"]
NAN, INF = float("nan"), float("inf")
LENGTHS = (1, 2, codec._FEW, codec._FEW + 1, codec._SMALL, codec._SMALL + 1, 512)
"""Both sides of each threshold (leaves or struct; Python's or numpy's min/max), and
natality's large request."""

ODD_VALUES = [
    # booleans, which numpy takes as 0/1 among numbers
    True, False,
    # integers at the edges of every integer dtype and of every float's exact-integer range
    0, -1, 1, 127, 128, 255, 256, -129, 32767, 32768, 65535, 65536, 2**31 - 1, 2**31, -2**31 - 1,
    2**32, 2**63 - 1, 2**63, -2**63, -2**63 - 1, 2**64 - 1, 2**64, 10**30,
    2047, 2048, 2**24 - 1, 2**24, 2**24 + 1, -2**24 - 1, 2**53 - 1, 2**53, 2**53 + 1,
    # floats: whole, signed zero, past the half and float limits, non-finite
    1.0, -0.0, 0.5, 2048.0, 65504.0, 65520.0, 1e30, 3.4028234663852886e38, 3.4028235e38, 1e39,
    1.7976931348623157e308, NAN, INF, -INF, float(2**24 + 1),
    # strings: empty, NUL, non-ASCII, a lone surrogate; base64 objects good and bad
    "1.5", "", "a\0b", "caf\u00e9", "\ud800", {"b64": "AA=="}, {"b64": "YQ"}, {"b64": "!"},
    {"b64": 5}, {"b64": "AA==", "x": 1},
    # anything else JSON has
    None, [1.0], [], {"x": 1},
]
BASES = {
    "floats": lambda rng: round(rng.uniform(-50, 50), 1),
    "ints": lambda rng: rng.randint(-100, 100),
    "small-positive-ints": lambda rng: rng.randint(0, 100),
    "mixed-ints-floats": lambda rng: rng.choice([rng.randint(-9, 9), rng.uniform(-9, 9)]),
    "big-floats": lambda rng: rng.uniform(-1e20, 1e20),
    "bools": lambda rng: rng.random() < 0.5,
    "strings": lambda rng: rng.choice(["True", "False", "Single(1)", "Twins(2)", "x" * 40, "\u00fc"]),
}


def spec(dtype: np.dtype) -> TensorSpec:
    return TensorSpec("x", dtype, None, DT_NAMES[dtype])


def checked(values: list[Any], dtype: np.dtype) -> np.ndarray | str:
    """The checked path alone: the tensor, or its error message."""
    flat: list[Any] = []
    try:
        shape = codec._walk(values, codec._leaf(spec(dtype))[0], flat)
        return codec._assemble(flat, shape, dtype)
    except InvalidArgument as err:
        return err.message


def before(values: list[Any], dtype: np.dtype) -> np.ndarray | str:
    """What decoded ``values`` before the shortcuts: the general fast path, else the checked
    path (the tensor, or the checked path's error message)."""
    general = codec._fast_strings(values) if dtype == STRING else codec._fast_numeric(values, dtype)
    return general if general is not None else checked(values, dtype)


def shortcut(values: list[Any], dtype: np.dtype) -> np.ndarray | None:
    return codec._flat_tensor(values, spec(dtype), codec._leaf(spec(dtype))[0])


def same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == STRING:
        return a.tolist() == b.tolist() and all(type(v) is bytes for v in a.ravel())
    return np.array_equal(a, b, equal_nan=True)


def cases(seed: int = 13, per_base: int = 160) -> list[tuple[str, list[Any]]]:
    """Flat lists of one kind with up to three odd values at random places (the first, the
    last, and the middle of 512 included)."""
    rng = random.Random(seed)
    out = []
    for base, draw in BASES.items():
        for i in range(per_base):
            n = LENGTHS[i % len(LENGTHS)]
            values = [draw(rng) for _ in range(n)]
            for _ in range(rng.choice([0, 1, 1, 2, 3])):
                values[rng.choice([0, n - 1, n // 2, rng.randrange(n)])] = rng.choice(ODD_VALUES)
            out.append((f"{base}-{n}-{i}", values))
    return out


CASES = cases()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_shortcuts_answer_only_as_the_paths_before_them(dtype: np.dtype):
    for name, values in CASES:
        got = shortcut(values, dtype)
        if got is None:
            continue
        want = before(values, dtype)
        assert isinstance(want, np.ndarray) and same(got, want), (name, values[:20])
        if isinstance(checked(values, dtype), str):
            # only what the general fast path tolerates: booleans mixed with numbers
            types = {type(v) for v in values}
            assert dtype.kind in "iuf" and bool in types and types - {bool}, (name, values[:20])


@pytest.mark.parametrize("dtype", NUMERIC, ids=str)
@pytest.mark.parametrize("n", LENGTHS)
def test_shortcuts_take_the_common_numbers(dtype: np.dtype, n: int):
    """Small ints for every dtype; floats, NaN, infinities and large floats for float dtypes."""
    rng = random.Random(n)
    lists = [[rng.randint(0, 100) for _ in range(n)]]
    if dtype.kind == "f":
        lists += [[round(rng.uniform(-50, 50), 1) for _ in range(n)],
                  ([NAN, INF, -INF] + [2.5] * n)[:n],
                  [rng.uniform(-60000, 60000) for _ in range(n)]]
    for values in lists:
        got = shortcut(values, dtype)
        assert got is not None and same(got, np.array(values, dtype=dtype)), values[:8]


@pytest.mark.parametrize("n", range(1, codec._FEW + 2))
def test_a_few_strings_and_booleans_take_the_leaves(n: int):
    """Up to ``_FEW`` of them; more are left to the general fast path."""
    texts = (["True", "caf\u00e9", {"b64": "YQ=="}, ""] * n)[:n]
    want = np.array([v.encode() if type(v) is str else b"a" for v in texts], dtype=object)
    bools = ([True, False] * n)[:n]
    if n <= codec._FEW:
        assert same(shortcut(texts, STRING), want)
        assert same(shortcut(bools, np.dtype(np.bool_)), np.array(bools))
    else:
        assert shortcut(texts, STRING) is None and shortcut(bools, np.dtype(np.bool_)) is None


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_decoding_equals_the_paths_before_the_shortcuts(dtype: np.dtype):
    """Through the public decoder: the tensor, or the error, the earlier paths give."""
    signature = SignatureSpec("serving_default", PREDICT, {"x": spec(dtype)}, {}, ("x",))
    for name, values in CASES:
        want = before(values, dtype)
        try:
            got = codec.decode_predict({"inputs": {"x": values}}, signature)[0]["x"]
        except InvalidArgument as err:
            assert err.message == f"Failed to process input: x of 'inputs' object. Error: {want}", name
            continue
        assert isinstance(want, np.ndarray) and same(got, want), (name, values[:20])


# --- through the API's bodies: 1 row and 512 rows, the odd value at row 0 or 400 ----------

F32, F64, I32, I64, U8 = (np.dtype(t) for t in (np.float32, np.float64, np.int32, np.int64, np.uint8))
BASE_VALUE = {F32: 25.5, F64: 25.5, I32: 7, I64: 7, U8: 7}


def natality_like(dtype: np.dtype) -> SignatureSpec:
    """Natality's shape (scalar inputs per row) with a numeric input of ``dtype``."""
    inputs = {"is_male": TensorSpec("is_male", STRING, (None,), "DT_STRING"),
              "x": TensorSpec("x", dtype, (None,), DT_NAMES[dtype])}
    return SignatureSpec("serving_default", PREDICT, inputs, {}, tuple(inputs))


def row_body(dtype: np.dtype, rows: int, at: int, value: Any) -> bytes:
    instances = [{"is_male": "True", "x": BASE_VALUE[dtype]} for _ in range(rows)]
    instances[at] = {"is_male": "True", "x": value}
    return json.dumps({"instances": instances}).encode()


ERRORS = [  # TF Serving's messages (its DataTypeString names), but for the range it would wrap within
    (I32, 2**31, r"JSON Value: 2147483648 Type: Number is not of expected type: int32$"),
    (I32, -2**31 - 1, "JSON Value: -2147483649 Type: Number is not of expected type: int32$"),
    (I64, 2**63, "JSON Value: 9223372036854775808 Type: Number is not of expected type: int64$"),
    (I64, 10**30, r"JSON Value: 1e\+30 Type: Number is not of expected type: int64$"),  # orjson: a float
    (U8, 256, r"JSON Value: 256 Type: Number is not of expected type: uint8 \(out of range \[0, 255\]\)$"),
    (U8, -1, "JSON Value: -1 .*out of range"),
    (U8, 2**31, "JSON Value: 2147483648 Type: Number is not of expected type: uint8$"),
    (I32, 5.5, "JSON Value: 5.5 Type: Number is not of expected type: int32$"),
    (I64, 5.0, "JSON Value: 5.0 Type: Number is not of expected type: int64$"),
    (F32, None, "JSON Value: null Type: Null is not of expected type: float$"),
    (F64, "1.5", 'JSON Value: "1.5" Type: String is not of expected type: double$'),
    (I32, {"b64": "AA=="}, 'JSON Value: {"b64":"AA=="} Type: Object is not of expected type: int32$'),
]


@pytest.mark.parametrize("rows, at", [(1, 0), (3, 2), (512, 400)])
@pytest.mark.parametrize("dtype, value, message", ERRORS,
                         ids=[f"{DT_NAMES[d]}-{v!r}" for d, v, _ in ERRORS])
def test_a_bad_value_is_reported_at_its_row(dtype: np.dtype, value: Any, message: str,
                                            rows: int, at: int):
    with pytest.raises(InvalidArgument, match=f"^Failed to process element: {at} key: x of "
                                              f"'instances' list. Error: INVALID_ARGUMENT: {message}"):
        codec.decode_predict(codec.parse_json(row_body(dtype, rows, at, value)), natality_like(dtype))


ACCEPTED = [
    (I32, 2**31 - 1), (I64, -2**63), (U8, 255), (F32, NAN), (F32, INF), (F32, -INF),
    (F32, 3.4028234663852886e38), (F32, 2**24 - 1), (F64, 2**53 - 1), (F64, 1e300), (F32, 7),
    (F64, -0.0),
    # any number, as TF Serving converts it: the double, static_cast to float
    (F32, 1e39), (F32, -1e300), (F32, 2**24 + 1), (F32, 1435774380), (F64, 2**53 + 1), (F64, 2**64),
]


@pytest.mark.parametrize("rows, at", [(1, 0), (3, 2), (512, 400)])
@pytest.mark.parametrize("dtype, value", ACCEPTED, ids=[f"{DT_NAMES[d]}-{v!r}" for d, v in ACCEPTED])
def test_a_value_at_the_edge_of_its_dtype_is_taken(dtype: np.dtype, value: Any, rows: int, at: int):
    tensors, _ = codec.decode_predict(codec.parse_json(row_body(dtype, rows, at, value)),
                                      natality_like(dtype))
    want = np.full(rows, BASE_VALUE[dtype], dtype=dtype)
    with np.errstate(over="ignore"):
        want[at] = float(value) if dtype.kind == "f" else value
    assert same(tensors["x"], want)


@pytest.mark.parametrize("rows", [1, 3, 512])
def test_an_int_column_of_booleans_alone_is_refused(rows: int):
    body = json.dumps({"instances": [{"is_male": "True", "x": True}] * rows}).encode()
    with pytest.raises(InvalidArgument, match="element: 0 key: x .*JSON Value: true Type: True "
                                              "is not of expected type: int32"):
        codec.decode_predict(codec.parse_json(body), natality_like(I32))


def test_a_boolean_among_ints_is_still_taken_as_1():
    """The general fast path's leniency (numpy promotes booleans mixed with numbers), kept."""
    tensors, _ = codec.decode_predict(codec.parse_json(row_body(I32, 512, 400, True)), natality_like(I32))
    assert tensors["x"][400] == 1 and tensors["x"].dtype == I32


def test_ints_among_floats_convert_exactly():
    values = [round(0.1 * i, 1) if i % 3 else i for i in range(512)]
    tensors, _ = codec.decode_predict({"inputs": {"x": values}}, natality_like(F32))
    assert same(tensors["x"], np.array(values, dtype=F32))


def test_an_int_past_floats_exact_range_among_ints_rounds():
    """TF Serving 2.10 dropped its check that such an int be exact (json_tensor.cc)."""
    values = [1] * 512
    values[400] = 2**24 + 1
    tensors, _ = codec.decode_predict({"inputs": {"x": values}}, natality_like(F32))
    assert tensors["x"][400] == 2**24 and same(tensors["x"], np.array(values, dtype=F32))


def test_one_row_takes_its_names_from_itself():
    """The one-row shortcut of the row gathering: an input named ``b64`` holding a number is
    an object of names, and a name the signature lacks is still refused."""
    signature = SignatureSpec("serving_default", PREDICT, {"b64": spec(I32)}, {}, ("b64",))
    tensors, _ = codec.decode_predict({"instances": [{"b64": 5}]}, signature)
    assert same(tensors["b64"], np.array([5], dtype=I32))
    with pytest.raises(InvalidArgument, match=r"Unknown input\(s\) \['x'\] for signature"):
        codec.decode_predict({"instances": [{"b64": 5, "x": 1}]}, signature)
