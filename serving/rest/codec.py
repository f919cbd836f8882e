"""TF Serving's REST JSON <-> numpy tensors and serialized ``tf.train.Example`` protos.

The wire format is TF Serving's (``tensorflow_serving/g3doc/api_rest.md``); behaviour and
error wording follow its ``tensorflow_serving/util/json_tensor.cc`` (2.21). Every function is
pure; a bad request raises ``InvalidArgument``; a value for an input of a type TF Serving does
not convert JSON to (half, bfloat16, uint16, complex, ...) raises ``Unimplemented`` (501) in
the columnar form, and in the row form the ``InvalidArgument`` that wraps it, as TF Serving
wraps every error of a row with its status code (``absl::Status::ToString``).

Requests
    parse_json(body)               -> dict; the NaN, Infinity, -Infinity tokens are allowed
    decode_predict(doc, signature) -> ({input: ndarray}, "row" | "columnar")
    decode_examples(doc)           -> [serialized tf.train.Example], context merged in
Responses
    encode_predict(outputs, form)  -> {"predictions": ...} (row) | {"outputs": ...} (columnar)
    encode_classify(outputs)       -> {"results": [[[label, score], ...], ...]}
    encode_regress(outputs)        -> {"results": [value, ...]}
    encode_error(message)          -> {"error": message}

Tensors: DT_STRING tensors are object arrays of ``bytes``. JSON strings arrive UTF-8
encoded and ``{"b64": ...}`` objects decoded; string outputs whose name ends in ``_bytes``
(and strings that are not UTF-8) leave as ``{"b64": ...}``, others as text. Floats leave as
the shortest text that round-trips in their own precision, non-finite ones as ``NaN``,
``Infinity`` and ``-Infinity``.

Input names are checked only as far as decoding needs them (a name the signature lacks
has no dtype); ``SignatureSpec.validate`` checks names, dtypes and shapes afterwards.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import json
import math
import struct
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import orjson

from serving.core.results import Classifications
from serving.errors import InvalidArgument, Unimplemented
from serving.rest import json_numbers
from serving.runtime.signature import DT_NAMES, STRING, SignatureSpec, TensorSpec, dtype_name, shape_text

Form = Literal["row", "columnar"]
Leaf = Callable[[Any], Any]
"""Checks and converts one JSON scalar of a tensor, or raises InvalidArgument."""

_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_NAN, _INF, _NEG_INF = (orjson.Fragment(t) for t in (b"NaN", b"Infinity", b"-Infinity"))
_MAX_RANK = 64  # numpy's limit (TF's is 254); also bounds the recursion in _fill
_SMALL = 64  # up to this many elements, Python's min/max beat numpy's reductions
_PREVIEW_CHARS = 120  # of a JSON value quoted in an error message

_INT_RANGES = {dt: (int(np.iinfo(dt).min), int(np.iinfo(dt).max))
               for dt in DT_NAMES if dt.kind in "iu"}
_FLOATS = frozenset({np.dtype(np.float32), np.dtype(np.float64)})
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_ROUNDS_TO_INFINITY = {np.dtype(np.float32): _FLOAT32_MAX + 2.0**103, np.dtype(np.float64): math.inf}  # + ulp/2
"""The magnitude from which a double cast to each float dtype is infinite."""
_ORJSON_DTYPES = frozenset(dt for dt in DT_NAMES if dt.kind in "biu") | _FLOATS
_INT64_MIN, _INT64_MAX = _INT_RANGES[np.dtype(np.int64)]
_UINT64_MAX = _INT_RANGES[np.dtype(np.uint64)][1]
_INFINITIES = (math.inf, -math.inf)
_TOO_BIG = "JSON Parse error: Number too big to be stored in double."
"""rapidjson's message (TF Serving adds " at offset: N", where the number starts)."""
_FEW = 8  # up to this many values, the checked path's leaves beat the bulk paths
_PACKED = {**dict.fromkeys(_FLOATS, "d"), **dict.fromkeys(_INT_RANGES, "q")}
"""The ``struct`` code a flat list of numbers is packed with, for each dtype that has one."""
_LEAF_DTYPES = frozenset(_PACKED) | {STRING, np.dtype(np.bool_)}  # every dtype a leaf converts
_TF_JSON_TYPES = frozenset({"DT_FLOAT", "DT_DOUBLE", "DT_INT32", "DT_INT16", "DT_INT8", "DT_UINT8",
                            "DT_STRING", "DT_INT64", "DT_BOOL", "DT_UINT32", "DT_UINT64"})
"""The types TF Serving's ``AddValueToTensor`` converts JSON values to; any other is
Unimplemented at its first value (the Open Inference Protocol's JSON takes uint16 too)."""
_TF_INT_CHECKS = {np.dtype(dtype): _INT_RANGES[np.dtype(check)] for dtype, check in (
    (np.int8, np.int32), (np.int16, np.int32), (np.uint8, np.int32), (np.int32, np.int32),
    (np.int64, np.int64), (np.uint32, np.uint32), (np.uint64, np.uint64))}
"""The range of rapidjson's check (IsInt, IsInt64, IsUint, IsUint64) ``AddValueToTensor`` makes
of an integer input's values: beyond it TF Serving answers its type error. Within it, a value
beyond int8, int16 or uint8 is kept in a 32-bit ``int_val`` and wraps around when the tensor is
made; the codec refuses it instead, saying the range."""


# --- requests ------------------------------------------------------------------------


def parse_json(body: bytes) -> dict[str, Any]:
    """Parse a request body whose top level must be a JSON object."""
    if not body:
        raise InvalidArgument("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = _parse_lenient(body)
    if type(doc) is not dict:
        raise InvalidArgument(f"JSON Value: {_preview(doc)} Is not object")
    return doc


def _parse_lenient(body: bytes) -> Any:
    """The stdlib parser accepts the NaN, Infinity and -Infinity tokens orjson rejects, and
    reads the numbers orjson refuses (a double cannot hold them) as rapidjson does."""
    try:
        return json.loads(body, parse_float=_json_float, parse_int=_json_int)
    except json.JSONDecodeError as err:
        raise InvalidArgument(f"JSON Parse error: {err.msg} at offset: {err.pos}") from None
    except UnicodeDecodeError:
        raise InvalidArgument("JSON Parse error: Invalid encoding in string.") from None
    except ValueError:  # an integer longer than Python converts (sys.get_int_max_str_digits)
        raise InvalidArgument(_TOO_BIG) from None
    except RecursionError:
        raise InvalidArgument("JSON Parse error: The document is nested too deeply.") from None


def _json_float(token: str) -> float:
    value = float(token)
    if value in _INFINITIES and json_numbers.too_big(token):
        raise InvalidArgument(_TOO_BIG)
    return value


def _json_int(token: str) -> int | float:
    """An integer beyond int64 and uint64 is a double, as rapidjson (and orjson) reads it."""
    value = int(token)
    if _INT64_MIN <= value <= _UINT64_MAX:
        return value
    if json_numbers.too_big(token):
        raise InvalidArgument(_TOO_BIG)
    return float(token)


def decode_predict(
    doc: dict[str, Any], signature: SignatureSpec
) -> tuple[dict[str, np.ndarray], Form]:
    """Tensors of a :predict request in row (``instances``) or columnar (``inputs``) form."""
    if "instances" in doc:
        if "inputs" in doc:
            raise InvalidArgument(
                "Not formatted correctly expecting only one of 'inputs' or 'instances' "
                "keys to exist"
            )
        return _decode_rows(doc["instances"], signature), "row"
    if "inputs" in doc:
        return _decode_columns(doc["inputs"], signature), "columnar"
    raise InvalidArgument("Missing 'inputs' or 'instances' key")


def _decode_rows(instances: Any, signature: SignatureSpec) -> dict[str, np.ndarray]:
    if type(instances) is not list:
        raise InvalidArgument("Expecting 'instances' to be a list/array")
    if not instances:
        raise InvalidArgument("No values in 'instances' array")
    if not _is_named(instances[0]):
        name, spec = _only_input(
            signature, "instances is a plain list, but expecting list of objects as "
            "multiple input tensors are required by the signature")
        return {name: _row_tensor(instances, spec, None)}
    names = instances[0].keys()
    _check_known(names, signature)
    return {name: _row_tensor(values, signature.inputs[name], name)
            for name, values in _columns(instances, names).items()}


def _columns(instances: list[Any], names: Any) -> dict[str, list[Any]]:
    """Each input's values down the rows, once every row is an object with exactly ``names``.

    Checked in bulk rather than row by row: a row that is not an object, or lacks a name,
    fails the gathering (TypeError, KeyError); with every name in every row, equal total
    key counts mean no row has more. Only then, or for an input named ``b64`` (whose
    ``{"b64": ...}`` rows are values, not objects), are the rows checked one by one.
    """
    if len(instances) == 1:  # the object the names came from
        return {name: [value] for name, value in instances[0].items()}
    try:
        columns = {name: [row[name] for row in instances] for name in names}
        exact = sum(map(len, instances)) == len(names) * len(instances)
    except (KeyError, TypeError):
        columns, exact = {}, False
    if not exact or names == {"b64"}:
        _check_row_keys(instances, names)
    return columns


def _check_row_keys(instances: list[Any], names: Any) -> None:
    """Raise for the first row that is not an object with exactly ``names``."""
    for i, row in enumerate(instances):
        if not _is_named(row):
            raise InvalidArgument(f"Expecting object but got value/list at item {i} of input list")
        if row.keys() != names:
            raise InvalidArgument(
                f"Failed to process element: {i} of 'instances' list. JSON object: "
                f"{_preview(row)} keys must be equal to: {','.join(sorted(names))}"
            )


def _decode_columns(inputs: Any, signature: SignatureSpec) -> dict[str, np.ndarray]:
    if _is_named(inputs):
        _check_known(inputs.keys(), signature)
        return {name: _column_tensor(value, signature.inputs[name], name, *_leaf(signature.inputs[name]))
                for name, value in inputs.items()}
    name, spec = _only_input(
        signature, "inputs is a plain value/list, but expecting an object as multiple "
        "input tensors are required by the signature")
    return {name: _column_tensor(inputs, spec, name, *_leaf(spec))}


def _is_b64(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def _is_named(value: Any) -> bool:
    """A JSON object mapping input names to values (a ``{"b64": ...}`` object is a value)."""
    return type(value) is dict and not _is_b64(value)


def _only_input(signature: SignatureSpec, message: str) -> tuple[str, TensorSpec]:
    if len(signature.inputs) != 1:
        if not signature.inputs:
            message = f"Signature '{signature.name}' has no inputs"
        raise InvalidArgument(message)
    return next(iter(signature.inputs.items()))


def _check_known(names: Any, signature: SignatureSpec) -> None:
    if not names <= signature.inputs.keys():
        unknown = [name for name in names if name not in signature.inputs]
        raise InvalidArgument(
            f"Unknown input(s) {sorted(unknown)} for signature '{signature.name}'; "
            f"expected {sorted(signature.inputs)}"
        )


def _row_tensor(rows: list[Any], spec: TensorSpec, key: str | None) -> np.ndarray:
    """Stack one input's value from every row along a new dimension 0.

    ``key`` is the input's name when rows are objects, None when rows are the values.
    """
    leaf, converts = _leaf(spec)
    fast = _fast_tensor(rows, spec, leaf) if converts else None
    if fast is not None:
        return fast
    flat: list[Any] = []
    shape: tuple[int, ...] = ()
    for i, row in enumerate(rows):
        if key is None and _is_named(row):
            raise InvalidArgument(f"Expecting value/list but got object at item {i} of input list")
        try:
            row_shape = _walk(row, leaf, flat)
            if i == 0:
                shape = row_shape
            elif row_shape != shape:
                _shape_mismatch(shape, row_shape)
        except (InvalidArgument, Unimplemented) as err:
            where = f"element: {i}" if key is None else f"element: {i} key: {key}"
            raise InvalidArgument(
                f"Failed to process {where} of 'instances' list. Error: {err.grpc_code}: {err.message}"
            ) from None
    return _assemble(flat, (len(rows), *shape), spec.dtype)


def _column_tensor(value: Any, spec: TensorSpec, name: str, leaf: Leaf, converts: bool) -> np.ndarray:
    """One input's value of the columnar form, as ``leaf`` converts its scalars (the fast
    paths only for a dtype it ``converts``). Its Unimplemented leaves unwrapped, as in TF
    Serving, which returns that status of ``FillTensorProto`` as it is."""
    fast = _fast_tensor(value, spec, leaf) if converts else None
    if fast is not None:
        return fast
    flat: list[Any] = []
    try:
        shape = _walk(value, leaf, flat)
    except InvalidArgument as err:
        raise InvalidArgument(
            f"Failed to process input: {name} of 'inputs' object. Error: {err.message}"
        ) from None
    return _assemble(flat, shape, spec.dtype)


def json_tensor(value: Any, spec: TensorSpec, name: str) -> np.ndarray:
    """A JSON value (a scalar or nested lists) as an array of ``spec``'s dtype (any in
    ``_LEAF_DTYPES``), by the columnar input's rules and fast paths, its messages naming the
    dtype as ``spec.dtype_name`` does; the Open Inference Protocol's JSON ``data``
    (``serving.rest.v2``) shares them."""
    leaf = _dtype_leaf(spec.dtype, spec.dtype_name or dtype_name(spec.dtype), None)
    return _column_tensor(value, spec, name, leaf, True)


def flat_json(value: np.ndarray) -> Any:
    """A numeric or boolean tensor's values, row-major and flat, as orjson (with
    ``OPT_SERIALIZE_NUMPY``) writes them: floats shortest, non-finite ones as the NaN and
    Infinity tokens, 16-bit floats (half, bfloat16) as float32."""
    flat = value.ravel()
    if flat.dtype.kind == "f" or flat.dtype.name == "bfloat16":
        if flat.dtype.itemsize < 4:
            flat = flat.astype(np.float32)
        if not np.isfinite(flat).all():
            return _float_json(flat)
    elif flat.dtype.kind not in "biu":
        raise InvalidArgument(f"Failed to write JSON value for tensor type: {dtype_name(value.dtype)}")
    return flat


def _shape_mismatch(expected: tuple[int, ...], got: tuple[int, ...]) -> None:
    if math.prod(expected) != math.prod(got):
        raise InvalidArgument(
            f"Expecting tensor size: {math.prod(expected)} but got: {math.prod(got)}")
    raise InvalidArgument(f"Expecting shape {shape_text(expected)} but got: {shape_text(got)}")


def _assemble(flat: list[Any], shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if len(shape) > _MAX_RANK:
        raise InvalidArgument(f"Tensor rank {len(shape)} is above the maximum of {_MAX_RANK}")
    return np.array(flat, dtype=dtype).reshape(shape)


# Fast paths: numpy finds the shape of the whole nested list at once and the values are
# converted in bulk; anything they do not accept (ragged lists, a value of the wrong type
# or out of range) returns None and goes through _walk, which either converts it or says
# exactly what is wrong and where.


def _fast_tensor(value: Any, spec: TensorSpec, leaf: Leaf) -> np.ndarray | None:
    """``value`` as a tensor of ``spec``'s dtype, or None when it needs the checked path
    (``leaf``, which converts that dtype)."""
    if type(value) is list and value and type(value[0]) is not list:
        flat = _flat_tensor(value, spec, leaf)
        if flat is not None:
            return flat
    return _fast_strings(value) if spec.is_string else _fast_numeric(value, spec.dtype)


# Shortcuts for a flat list of scalars (an input of a row-format request whose rows hold
# scalars, or a columnar input of shape [None]), ahead of the general fast paths. Each
# returns what the general fast path would return, or None and leaves the value to it.


def _flat_tensor(values: list[Any], spec: TensorSpec, leaf: Leaf) -> np.ndarray | None:
    if len(values) <= _FEW:
        return _few(values, leaf, spec.dtype)
    return _flat_numbers(values, spec.dtype) if spec.dtype in _PACKED else None


def _few(values: list[Any], leaf: Leaf, dtype: np.dtype) -> np.ndarray | None:
    """A handful of values through the checked path's own leaves, skipping numpy's shape
    and type discovery. What the leaves accept the general fast path accepts too, with the
    same values; what they refuse is left to it (it tolerates some mixes they do not)."""
    try:
        return np.array([leaf(value) for value in values], dtype=dtype)
    except InvalidArgument:
        return None


def _flat_numbers(values: list[Any], dtype: np.dtype) -> np.ndarray | None:
    """JSON numbers packed by ``struct`` in one C pass, then checked in bulk.

    ``struct`` refuses strings, null, lists and objects (and floats for an integer dtype),
    and takes booleans as 0/1, as numpy does when they are mixed with numbers; a list of
    booleans alone (its first value tells) is left to the general path, which refuses it.
    A float dtype takes every number as a double, as TF Serving does, but beyond the ints
    numpy keeps numeric (int64 and uint64; past them it makes an array of objects, and takes
    no booleans as 0/1) only a list of floats alone; an integer dtype only ints in its range.
    """
    if type(values[0]) is bool:
        return None
    code = _PACKED[dtype]
    arr = np.empty(len(values), dtype=np.float64 if code == "d" else np.int64)
    try:
        struct.pack_into(f"{len(values)}{code}", arr, 0, *values)
    except (struct.error, TypeError, OverflowError):
        return None
    lowest, highest = _bounds(values, arr)
    if code == "d":
        if _INT64_MIN <= lowest and highest <= _UINT64_MAX or set(map(type, values)) == {float}:
            return _as_float(arr, dtype, finite=-_FLOAT32_MAX <= lowest and highest <= _FLOAT32_MAX)
        return None
    low, high = _INT_RANGES[dtype]
    return arr.astype(dtype, copy=False) if low <= lowest and highest <= high else None


def _bounds(values: list[Any], arr: np.ndarray) -> tuple[Any, Any]:
    """The least and the greatest number. With a NaN either may be NaN (numpy's are; Python's
    min/max skip it unless it comes first), which compares in no range."""
    if len(values) <= _SMALL:
        return min(values), max(values)
    return np.minimum.reduce(arr), np.maximum.reduce(arr)


def _fast_strings(value: Any) -> np.ndarray | None:
    """A dense nested list of JSON strings and ``{"b64": ...}`` objects as ``bytes``.

    With ``dtype=object`` numpy stops at a ragged level and keeps its lists as elements;
    a list is never a string leaf, so a ragged value returns None like any bad leaf.
    """
    if type(value) is list:  # most often a flat list of strings: one pass, no shape to find
        with contextlib.suppress(TypeError, UnicodeEncodeError):
            return np.fromiter(map(str.encode, value), dtype=object, count=len(value))
    try:
        arr = np.array(value, dtype=object)
        flat = arr.reshape(-1)
        items = flat.tolist()
        try:
            flat[:] = list(map(str.encode, items))
        except TypeError:  # not all strings: {"b64": ...} objects, or a bad leaf
            flat[:] = [item.encode() if type(item) is str else _b64_decode(item) for item in items]
    except (ValueError, UnicodeEncodeError, InvalidArgument):
        return None
    return arr


# Numeric fast path: numpy infers the JSON values' type, then it is checked against the
# input's dtype. Anything it does not accept goes through _walk, which either converts it
# or says exactly what is wrong. Leniency: numbers mixed with true/false in one tensor are
# taken as 1/0 (numpy promotes them before the check can see them).


def _fast_numeric(value: Any, dtype: np.dtype) -> np.ndarray | None:
    """``value`` as a ``dtype`` array, or None when it needs the checked path."""
    try:
        arr = np.array(value)
    except (ValueError, TypeError, OverflowError):  # ragged lists, huge ints
        return None
    src, target = arr.dtype.kind, dtype.kind
    if arr.size == 0:
        return arr.astype(dtype) if src == "f" and target in "fiub" else None
    if dtype in _FLOATS:
        return _as_float(arr, dtype) if src in "fiu" else None
    if target in "iu" and src in "iu" and dtype in _INT_RANGES:
        lo, hi = _min_max(arr)
        low, high = _INT_RANGES[dtype]
        return arr.astype(dtype, copy=False) if low <= lo and hi <= high else None
    if target == "b" and src == "b":
        return arr
    return None


def _as_float(arr: np.ndarray, dtype: np.dtype, finite: bool = False) -> np.ndarray:
    """Numbers as ``dtype`` the way TF Serving converts them (rapidjson's GetFloat and
    GetDouble): each as a double, then ``static_cast`` to float, so a finite double beyond
    float's largest becomes ±inf, without numpy's overflow warning (kept quiet at a cost of
    a microsecond unless the caller knows all values are ``finite`` in float32)."""
    arr = arr.astype(np.float64, copy=False)
    if dtype == arr.dtype:
        return arr
    if finite:
        return arr.astype(dtype)
    with np.errstate(over="ignore"):
        return arr.astype(dtype)


def _min_max(arr: np.ndarray) -> tuple[int, int]:
    if arr.size <= _SMALL:
        values = arr.ravel().tolist()
        return min(values), max(values)
    return int(arr.min()), int(arr.max())


# Checked path: walk the nested lists like TF Serving's FillTensorProto.


def _walk(value: Any, leaf: Leaf, flat: list[Any]) -> tuple[int, ...]:
    """Append the converted leaves of a dense nested list to ``flat``; return its shape.

    The shape is read off the first element at each level; every other list must match.
    """
    shape: list[int] = []
    probe = value
    while type(probe) is list:
        shape.append(len(probe))
        if not probe or len(shape) > _MAX_RANK:
            break
        probe = probe[0]
    if len(shape) > _MAX_RANK:
        raise InvalidArgument(f"Tensor rank is above the maximum of {_MAX_RANK}")
    _fill(value, tuple(shape), 0, leaf, flat)
    return tuple(shape)


def _fill(value: Any, shape: tuple[int, ...], level: int, leaf: Leaf, flat: list[Any]) -> None:
    rank = len(shape)
    if type(value) is not list:
        if level != rank:
            raise InvalidArgument(
                f"JSON Value: {_preview(value)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {rank}"
            )
        flat.append(leaf(value))
        return
    if level >= rank:
        raise InvalidArgument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise InvalidArgument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    for item in value:
        _fill(item, shape, level + 1, leaf, flat)


def _leaf(spec: TensorSpec) -> tuple[Leaf, bool]:
    """The leaf TF Serving's rules give ``spec``'s values, its messages naming the type as
    TF Serving does (``DataTypeString``: float, int32, half), and whether it converts them."""
    return _tf_leaf(spec.dtype, spec.dtype_name or dtype_name(spec.dtype))


@functools.cache  # one per dtype and name the signatures hold
def _tf_leaf(dtype: np.dtype, tf_type: str) -> tuple[Leaf, bool]:
    name = tf_type.removeprefix("DT_").lower()  # DataTypeString(DT_HALF) is "half"
    if tf_type in _TF_JSON_TYPES:
        return _dtype_leaf(dtype, name, _TF_INT_CHECKS.get(dtype)), True
    return _unconvertible_leaf(name), False


@functools.cache  # one per dtype, name and integer check the signatures and datatypes hold
def _dtype_leaf(dtype: np.dtype, dt_name: str, int_check: tuple[int, int] | None) -> Leaf:
    if dtype == STRING:
        return _string_leaf(dt_name)
    if dtype in _FLOATS:
        return _float_leaf(dt_name, _ROUNDS_TO_INFINITY[dtype])
    if dtype in _INT_RANGES:
        return _int_leaf(dtype, dt_name, int_check)
    if dtype.kind == "b":
        return _bool_leaf(dt_name)
    raise ValueError(f"JSON values do not convert to {dtype}")  # json_tensor's caller: a leaf dtype


def _unconvertible_leaf(dt_name: str) -> Leaf:
    """TF Serving's answer for a type ``AddValueToTensor`` has no case for: an object (even
    ``{"b64": ...}``) is a type error, any other value Unimplemented."""

    def leaf(value: Any) -> Any:
        if type(value) is dict:
            raise _type_error(value, dt_name)
        raise Unimplemented(f"Conversion of JSON Value: {_preview(value)} to type: {dt_name}")

    return leaf


def _float_leaf(dt_name: str, infinite: float) -> Leaf:
    """Any JSON number, as a double (TF Serving 2.10 dropped its check that an integer be
    exactly representable; json_tensor.cc's FloatTensorWithPrecisionLoss), ±inf from where
    the cast to the dtype rounds to infinity (numpy would warn)."""

    def leaf(value: Any) -> float:
        kind = type(value)
        if kind is int:
            value = float(value)
        elif kind is not float:
            raise _type_error(value, dt_name)
        if -infinite < value < infinite or value != value:  # NaN
            return value
        return math.copysign(math.inf, value)

    return leaf


def _int_leaf(dtype: np.dtype, dt_name: str, check: tuple[int, int] | None) -> Leaf:
    """Ints in the dtype's range. Beyond it, a type error: just that beyond ``check`` (TF
    Serving's own check, see ``_TF_INT_CHECKS``), with the range otherwise."""
    low, high = _INT_RANGES[dtype]

    def leaf(value: Any) -> int:
        if type(value) is not int:
            raise _type_error(value, dt_name)
        if not low <= value <= high:
            if check is not None and not check[0] <= value <= check[1]:
                raise _type_error(value, dt_name)
            raise InvalidArgument(
                f"JSON Value: {value} Type: Number is not of expected type: {dt_name} "
                f"(out of range [{low}, {high}])"
            )
        return value

    return leaf


def _bool_leaf(dt_name: str) -> Leaf:
    def leaf(value: Any) -> bool:
        if type(value) is not bool:
            raise _type_error(value, dt_name)
        return value

    return leaf


def _string_leaf(dt_name: str) -> Leaf:
    def leaf(value: Any) -> bytes:
        if type(value) is str:
            return _utf8(value)
        if type(value) is dict:
            return _b64_decode(value)
        raise _type_error(value, dt_name)

    return leaf


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate escape such as "\ud800"
        raise InvalidArgument(f"JSON Value: {_preview(text)} is not valid Unicode") from None


def _b64_decode(value: Any) -> bytes:
    if not _is_b64(value):
        raise InvalidArgument(
            f"JSON Value: {_preview(value)} not formatted correctly for base64 data")
    text = value["b64"]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"Unable to base64 decode {_preview(text)}") from None


def _type_error(value: Any, dt_name: str) -> InvalidArgument:
    return InvalidArgument(
        f"JSON Value: {_preview(value)} Type: {_json_type(value)} is not of expected type: "
        f"{dt_name}"
    )


# --- classify / regress requests -------------------------------------------------------


def decode_examples(doc: dict[str, Any]) -> list[bytes]:
    """Serialized ``tf.train.Example`` protos of a :classify or :regress request.

    The ``context`` features are merged into every example the way TF Serving does it:
    the serialized context is prepended to each serialized example.
    """
    from tensorflow.core.example import example_pb2

    examples = doc.get("examples")
    if examples is None:
        raise InvalidArgument("key 'examples' is expected and was not found")
    if type(examples) is not list:
        raise InvalidArgument("Expecting 'examples' value to be a list/array")
    if not examples:
        raise InvalidArgument("'examples' value is an empty array")
    prefix, context_names = b"", frozenset()
    if "context" in doc:
        prefix = _example(doc["context"], "'context'", example_pb2).SerializeToString()
        context_names = frozenset(doc["context"])
    serialized = []
    for i, features in enumerate(examples):
        example = _example(features, "Example", example_pb2)
        shared = context_names.intersection(features)
        if shared:
            raise InvalidArgument(
                f"Feature(s) {sorted(shared)} of example {i} also appear in 'context'; "
                "features in 'context' must not appear in 'examples'"
            )
        serialized.append(prefix + example.SerializeToString())
    return serialized


def _example(features: Any, what: str, example_pb2: Any) -> Any:
    if type(features) is not dict:
        raise InvalidArgument(f"{what} must be JSON object but got JSON {_json_type(features)}")
    example = example_pb2.Example()
    feature_map = example.features.feature
    for name, value in features.items():
        _fill_feature(feature_map[name], name, value if type(value) is list else [value])
    return example


def _fill_feature(feature: Any, name: str, values: list[Any]) -> None:
    """TF Serving's ``AddValueToFeature`` over the values in order: the first one's kind is
    the feature's (int64 for an integer or a boolean, float for any other number, bytes for a
    string or ``{"b64": ...}``) and a value of another kind is refused, naming it."""
    kind = None
    items = []
    for value in values:
        value_kind = _feature_kind(name, value)
        if kind is None:
            kind = value_kind
        elif value_kind != kind:
            raise InvalidArgument(f"Unexpected element type in feature: {name} expecting type: {kind}")
        items.append(_feature_item(name, kind, value))
    if kind is None:
        feature.SetInParent()
    else:
        getattr(feature, f"{kind}_list").value.extend(items)


def _feature_kind(name: str, value: Any) -> str:
    """rapidjson's type of a JSON number decides: an integer token in int64 or uint64 range
    is an int, any other number a double (so float)."""
    kind = type(value)
    if kind is str or _is_b64(value):
        return "bytes"
    if kind is int:
        return "int64" if _INT64_MIN <= value <= _UINT64_MAX else "float"
    if kind is bool:
        return "int64"
    if kind is float:
        return "float"
    raise InvalidArgument(
        f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}")


def _feature_item(name: str, kind: str, value: Any) -> Any:
    if kind == "bytes":
        return _utf8(value) if type(value) is str else _b64_decode(value)
    if kind == "float":
        return float(value)  # the feature's float32 takes it as a static_cast, infinity included
    if value > _INT64_MAX:
        raise InvalidArgument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
    return int(value)


# --- responses -------------------------------------------------------------------------


def encode_predict(outputs: dict[str, np.ndarray], form: Form) -> bytes:
    """The :predict response body for a request that came in ``form``."""
    if not outputs:
        raise InvalidArgument("Cannot convert empty tensor map to JSON")
    if form not in ("row", "columnar"):
        raise ValueError(f"form must be 'row' or 'columnar', not {form!r}")
    batch = _batch_size(outputs) if form == "row" else 0
    if all(value.dtype in _ORJSON_DTYPES for value in outputs.values()):
        fast = {name: value if value.ndim else value[()] for name, value in outputs.items()}
        body = _dumps_finite(_predict_doc(fast, form, batch))
        if body is not None:
            return body
    values = {name: _jsonable(value, name) for name, value in outputs.items()}
    return orjson.dumps(_predict_doc(values, form, batch), option=_NUMPY)


def _batch_size(outputs: dict[str, np.ndarray]) -> int:
    """The dimension 0 all outputs must share to be split into rows."""
    batch = -1
    for name, value in outputs.items():
        if value.ndim == 0:
            raise InvalidArgument(f"Tensor name: {name} has no shape information")
        if batch >= 0 and value.shape[0] != batch:
            raise InvalidArgument(
                f"Tensor name: {name} has inconsistent batch size: {value.shape[0]} "
                f"expecting: {batch}"
            )
        batch = value.shape[0]
    return batch


def _predict_doc(values: dict[str, Any], form: Form, batch: int) -> dict[str, Any]:
    """Arrange per-output values (arrays or nested lists) as TF Serving does."""
    if form == "row":
        if len(values) == 1:
            return {"predictions": next(iter(values.values()))}
        return {"predictions": [{name: value[i] for name, value in values.items()}
                                for i in range(batch)]}
    if len(values) == 1:
        return {"outputs": next(iter(values.values()))}
    return {"outputs": values}


def _dumps_finite(doc: Any) -> bytes | None:
    """orjson's numpy serialization, or None if it met a non-finite float or odd array.

    orjson writes NaN and ±inf as ``null``, which numeric tensors cannot otherwise produce
    (an output name containing "null" only costs the slow path).
    """
    try:
        body = orjson.dumps(doc, option=_NUMPY)
    except orjson.JSONEncodeError:  # not C-contiguous, not native byte order
        return None
    return None if b"null" in body else body


def _jsonable(value: np.ndarray, name: str) -> Any:
    """Nested lists orjson can write, for tensors its numpy support does not cover."""
    kind = value.dtype.kind
    if kind == "f":
        return _float_json(value)
    if kind in "biu":
        return value.tolist()
    if value.dtype == STRING:
        return _nest(_string_items(value, name.endswith("_bytes")), value.shape)
    raise InvalidArgument(f"Failed to write JSON value for tensor type: {dtype_name(value.dtype)}")


def _float_json(value: np.ndarray) -> Any:
    """Numpy float scalars (written shortest by orjson) with NaN/Infinity tokens spliced in."""
    if value.dtype.itemsize < 4 or value.dtype.itemsize > 8:
        value = value.astype(np.float32 if value.dtype.itemsize < 4 else np.float64)
    flat = value.ravel()
    items: list[Any] = list(flat)
    for i in np.flatnonzero(~np.isfinite(flat)).tolist():
        items[i] = _NAN if math.isnan(items[i]) else _INF if items[i] > 0 else _NEG_INF
    return _nest(items, value.shape)


def _string_items(value: np.ndarray, as_bytes: bool) -> list[Any]:
    items = value.ravel().tolist()
    if as_bytes:
        return [_b64_object(item) for item in items]
    return [_text(item) for item in items]


def _text(item: Any) -> Any:
    if type(item) is str:
        return item
    try:
        return item.decode()
    except UnicodeDecodeError:
        return _b64_object(item)


def _b64_object(item: Any) -> dict[str, str]:
    data = item.encode() if type(item) is str else bytes(item)
    return {"b64": base64.b64encode(data).decode("ascii")}


def _nest(items: list[Any], shape: tuple[int, ...]) -> Any:
    """Row-major ``items`` as nested lists of ``shape``."""
    if not shape:
        return items[0]
    if 0 in shape:
        return np.empty(shape).tolist()
    for size in reversed(shape[1:]):
        items = [items[i:i + size] for i in range(0, len(items), size)]
    return items


def encode_classify(result: Classifications) -> bytes:
    """``{"results": [[[label, score], ...], ...]}`` from checked classifications."""
    rows, num_classes = result.shape
    if rows == 0:
        raise InvalidArgument("Cannot convert empty ClassificationResults to JSON")
    values = _float_json(result.scores) if result.scores is not None else [[0.0] * num_classes] * rows
    results = [[list(pair) for pair in zip(label_row, value_row)]
               for label_row, value_row in zip(result.label_rows(), values)]
    return orjson.dumps({"results": results}, option=_NUMPY)


def encode_regress(values: np.ndarray) -> bytes:
    """``{"results": [...]}`` from checked regressions (one float32 per example)."""
    if values.shape[0] == 0:
        raise InvalidArgument("Cannot convert empty RegressionResults to JSON")
    body = _dumps_finite({"results": values})
    return body if body is not None else orjson.dumps(
        {"results": _float_json(values)}, option=_NUMPY)


def encode_error(message: str) -> bytes:
    """TF Serving's error body."""
    try:
        return orjson.dumps({"error": message})
    except orjson.JSONEncodeError:  # a lone surrogate; the stdlib escapes it
        return json.dumps({"error": message}).encode()


# --- helpers -------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    """TF Serving's names for JSON types, used in its error messages."""
    if value is None:
        return "Null"
    if type(value) is bool:
        return "True" if value else "False"
    if type(value) in (int, float):
        return "Number"
    return {str: "String", list: "Array", dict: "Object"}.get(type(value), type(value).__name__)


def _preview(value: Any) -> str:
    """A JSON value as text for an error message, cut short if long."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    if len(text) > _PREVIEW_CHARS:
        return text[:_PREVIEW_CHARS] + "..."
    return text
