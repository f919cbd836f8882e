"""TensorProto <-> numpy: the one module where TF Serving's tensor wire rules live.

Protos -> numpy (``protos_to_numpy``, ``to_numpy``) reads what a client or an upstream sent,
so nothing is allocated before the proto is checked: a supported dtype (the signature's, when
one is given), a valid shape (no unknown rank, at most numpy's 64 dimensions, no negative
dimension, no element count that overflows), the row and decoded-byte limits (the shape and
limit rules are ``serving.runtime.shapes``', shared with the Open Inference Protocol), and
content that matches the shape (``tensor_content`` of exactly elements x dtype size bytes, or
for DT_STRING TensorFlow's encoded string list filling it exactly; or exactly ``elements``
values in the dtype's ``*_val`` field, or exactly one value broadcast to the shape;
TensorFlow would also pad any shorter list with its last value, which hides a truncated
tensor). Anything else is ``InvalidArgument`` (``PayloadTooLarge`` for a limit), with the
input's name. Only then is the array built, with numpy straight from the proto's fields
(``np.frombuffer``; a long float field from the proto's packed bytes; ``np.fromiter`` for the
rest); for valid protos the result equals ``tf.make_ndarray``'s (``half_val`` holds
float16/bfloat16 bits, complex values are pairs, strings are an object array of bytes), which
a test checks for every dtype.

numpy -> proto (``to_proto``) writes what TensorFlow's C++ ``Tensor`` writes, since TF
Serving answers with it (``predict_util.cc``): ``AsProtoField`` by default, every value in
its dtype's typed field (``float_val``, ``int64_val``, ``string_val``, half types as bits in
``half_val``, complex as pairs), which is what client code reading ``outputs[k].float_val``
needs; ``AsProtoTensorContent`` with ``content`` (``--enable_serialization_as_tensor_content``,
and our own upstream hop, where it is cheaper to decode). Tests check the bytes against
``tensor.cc``'s rules for every dtype, and against TensorFlow's own C++ for the content form.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from operator import attrgetter

import numpy as np
import tensorflow as tf
from google.protobuf.message import Message
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.errors import InvalidArgument, ServingError
from serving.runtime.shapes import MAX_RANK, UNBOUNDED, TensorLimits, check_rank, check_total, elements
from serving.runtime.shapes import what as _what
from serving.runtime.signature import STRING, TensorSpec, shape_text

_POINTER_BYTES = np.dtype(object).itemsize
"""What one element of a DT_STRING tensor costs in its numpy array, beside the bytes."""


def answer_limits(message: Message) -> TensorLimits:
    """Limits for the tensors of a peer's answer (a TF Serving PredictResponse).

    A proto whose values are all written out decodes to at most 8 bytes per byte on the
    wire (a one-byte varint of ``int64_val``); only a broadcast value decodes to more, and
    TF Serving never broadcasts. So an answer may decode to 8x its own size, and a tiny
    answer that claims a huge shape is refused instead of allocated.
    """
    return TensorLimits(max_bytes=8 * message.ByteSize())


@dataclass(frozen=True)
class _Kind:
    dtype: np.dtype
    """What the array is (a structured dtype for the quantized types, as TF's)."""
    field: str
    """The repeated field holding the values when ``tensor_content`` is empty."""
    wire: np.dtype
    """The values' dtype as read from ``field``, before range checks and the view."""
    per_value: int = 1
    """Field entries per element (2 for complex: real, imaginary)."""
    bits: bool = False
    """``field`` holds the element's bit pattern (``half_val``, ``float8_val``)."""
    # Worked out once from the above, not per tensor:
    number: int = field(init=False)
    """``field``'s number in TensorProto."""
    string: bool = field(init=False)
    itemsize: int = field(init=False)
    """Bytes per element decoded (a DT_STRING element: its pointer)."""
    narrow: bool = field(init=False)
    """``field``'s values are wider on the wire than the element: range-checked."""
    view: bool = field(init=False)
    """The values read are viewed as ``dtype``."""
    name: str = field(init=False, default="")
    """The DataType's name (``DT_FLOAT``), set by ``_kinds``: for messages."""

    def __post_init__(self) -> None:
        string = self.dtype == STRING
        object.__setattr__(self, "number", tensor_pb2.TensorProto.DESCRIPTOR.fields_by_name[self.field].number)
        object.__setattr__(self, "string", string)
        object.__setattr__(self, "itemsize", _POINTER_BYTES if string else self.dtype.itemsize)
        object.__setattr__(self, "narrow", self.bits or (self.wire.kind in "iu" and self.wire.itemsize < 4))
        object.__setattr__(self, "view", self.per_value == 2 or self.bits or self.dtype != self.wire)


def _kinds() -> dict[int, _Kind]:
    def numpy_dtype(enum: int) -> np.dtype:
        return np.dtype(tf.dtypes.as_dtype(enum).as_numpy_dtype)

    d = types_pb2
    kinds = {
        d.DT_FLOAT: _Kind(np.dtype(np.float32), "float_val", np.dtype(np.float32)),
        d.DT_DOUBLE: _Kind(np.dtype(np.float64), "double_val", np.dtype(np.float64)),
        d.DT_INT64: _Kind(np.dtype(np.int64), "int64_val", np.dtype(np.int64)),
        d.DT_UINT32: _Kind(np.dtype(np.uint32), "uint32_val", np.dtype(np.uint32)),
        d.DT_UINT64: _Kind(np.dtype(np.uint64), "uint64_val", np.dtype(np.uint64)),
        d.DT_BOOL: _Kind(np.dtype(np.bool_), "bool_val", np.dtype(np.bool_)),
        d.DT_STRING: _Kind(STRING, "string_val", STRING),
        d.DT_COMPLEX64: _Kind(np.dtype(np.complex64), "scomplex_val", np.dtype(np.float32), per_value=2),
        d.DT_COMPLEX128: _Kind(np.dtype(np.complex128), "dcomplex_val", np.dtype(np.float64), per_value=2),
        d.DT_HALF: _Kind(np.dtype(np.float16), "half_val", np.dtype(np.uint16), bits=True),
        d.DT_BFLOAT16: _Kind(numpy_dtype(d.DT_BFLOAT16), "half_val", np.dtype(np.uint16), bits=True),
        d.DT_FLOAT8_E5M2: _Kind(numpy_dtype(d.DT_FLOAT8_E5M2), "float8_val", np.dtype(np.uint8), bits=True),
    }
    for enum in (d.DT_FLOAT8_E4M3FN, d.DT_FLOAT8_E4M3FNUZ, d.DT_FLOAT8_E4M3B11FNUZ, d.DT_FLOAT8_E5M2FNUZ):
        kinds[enum] = _Kind(numpy_dtype(enum), "float8_val", np.dtype(np.uint8), bits=True)
    for enum, base in ((d.DT_INT32, np.int32), (d.DT_INT16, np.int16), (d.DT_INT8, np.int8),
                       (d.DT_UINT16, np.uint16), (d.DT_UINT8, np.uint8)):
        kinds[enum] = _Kind(np.dtype(base), "int_val", np.dtype(base))
    for enum, base in ((d.DT_QINT8, np.int8), (d.DT_QUINT8, np.uint8), (d.DT_QINT16, np.int16),
                       (d.DT_QUINT16, np.uint16), (d.DT_QINT32, np.int32)):
        kinds[enum] = _Kind(numpy_dtype(enum), "int_val", np.dtype(base))
    for enum, kind in kinds.items():
        object.__setattr__(kind, "name", types_pb2.DataType.Name(enum))
    return kinds


_KINDS = _kinds()


def _dt_name(enum: int) -> str:
    try:
        return types_pb2.DataType.Name(enum)
    except ValueError:
        return f"data type {enum}"


class _Checked:
    """A proto that passed the checks, with what they worked out (a plain class: per request)."""

    __slots__ = ("role", "name", "proto", "kind", "shape", "elements", "nbytes", "content", "stops")

    def __init__(self, role: str, name: str, proto: tensor_pb2.TensorProto, kind: _Kind,
                 shape: tuple[int, ...], elements: int) -> None:
        self.role = role
        self.name = name
        self.proto = proto
        self.kind = kind
        self.shape = shape
        self.elements = elements
        self.nbytes = elements * kind.itemsize
        self.content = b""
        """``tensor_content``, once checked."""
        self.stops: list[int] | np.ndarray | None = None
        """Where a DT_STRING ``tensor_content``'s strings start and stop, once checked."""

    @property
    def what(self) -> str:
        return _what(self.role, self.name)


def protos_to_numpy(protos: Mapping[str, tensor_pb2.TensorProto], limits: TensorLimits = UNBOUNDED,
                    specs: Mapping[str, TensorSpec] | None = None, role: str = "Input",
                    ) -> dict[str, np.ndarray]:
    """Every proto checked (against ``specs``' dtypes where they name it) and the limits
    applied to all of them together, before their content is looked at and any array is
    built; messages call each tensor ``role`` ('Input', 'Output')."""
    checked = [_check(name, proto, limits, specs.get(name) if specs else None, role)
               for name, proto in protos.items()]
    if limits.max_bytes is not None and len(checked) > 1:
        check_total(sum([c.nbytes for c in checked]), limits)
    for c in checked:
        _check_content(c)
    return {c.name: _build(c) for c in checked}


def to_numpy(name: str, proto: tensor_pb2.TensorProto, limits: TensorLimits = UNBOUNDED,
             spec: TensorSpec | None = None) -> np.ndarray:
    """One proto, checked as in ``protos_to_numpy``."""
    return protos_to_numpy({name: proto}, limits, {name: spec} if spec else None)[name]


_SIZE = attrgetter("size")


def _check(name: str, proto: tensor_pb2.TensorProto, limits: TensorLimits,
           spec: TensorSpec | None, role: str) -> _Checked:
    # Per tensor of every gRPC request: few attribute reads, no per-dimension Python frames.
    kind = _KINDS.get(proto.dtype)
    if kind is None:
        raise InvalidArgument(f"{_what(role, name)} has {_dt_name(proto.dtype)}, which cannot be served")
    # DT_STRING's dtype is the string spec's, so one comparison covers the string mismatch too.
    if spec is not None and kind.dtype is not spec.dtype and kind.dtype != spec.dtype:
        raise InvalidArgument(
            f"{_what(role, name)} expects {spec.dtype_name or spec.dtype}, got {_dt_name(proto.dtype)}")
    tensor_shape = proto.tensor_shape
    if tensor_shape.unknown_rank:
        raise InvalidArgument(f"{_what(role, name)} has an unknown rank; a tensor needs a known shape")
    dims = tensor_shape.dim
    if len(dims) > MAX_RANK:  # before a hostile million-dimension tuple is built
        check_rank(len(dims), role, name)
    shape = tuple(map(_SIZE, dims))
    return _Checked(role, name, proto, kind, shape,
                    elements(shape, kind.itemsize, limits, spec, role, name, kind.name))


def _check_content(c: _Checked) -> None:
    content = c.proto.tensor_content
    if content:
        what = c.what
        if c.kind.string:
            c.stops = _string_stops(c, content)
            c.content = content
            return
        expected = c.nbytes
        if len(content) != expected:
            raise InvalidArgument(
                f"{what}: tensor_content has {len(content)} bytes; shape {shape_text(c.shape)} of "
                f"{_dt_name(c.proto.dtype)} needs {expected}")
        c.content = content
        return
    entries = len(getattr(c.proto, c.kind.field))
    if entries % c.kind.per_value:
        raise InvalidArgument(f"{c.what}: {c.kind.field} has an odd number of entries ({entries}); "
                              "complex values come as (real, imaginary) pairs")
    values = entries // c.kind.per_value
    if values == c.elements or (values == 1 and c.elements > 0):
        return
    what = c.what
    if values == 0:
        raise InvalidArgument(f"{what} has no values for shape {shape_text(c.shape)} "
                              f"({c.elements} elements): set tensor_content or {c.kind.field}")
    raise InvalidArgument(
        f"{what} has {values} values in {c.kind.field} for shape {shape_text(c.shape)}; "
        f"expected {c.elements} (or one, to be repeated)")


_FEW_STRINGS = 32
"""Up to this many strings their stops are worked out in Python (numpy's calls cost more)."""


def _string_stops(c: _Checked, content: bytes) -> list[int] | np.ndarray:
    """Where each string of TensorFlow's encoded string list (``DecodeStringList``) starts,
    and the last one stops: each string's length as a varint32, then the strings back to
    back, exactly filling ``content``. Only checked here (8 bytes per element, as the limits
    count a string); the strings are cut out in ``_build``, once every input has passed."""
    n = c.elements
    if not n:
        raise InvalidArgument(f"{c.what}: tensor_content has {len(content)} bytes for shape "
                              f"{shape_text(c.shape)}, which has no elements")
    if len(content) >= n and max(content[:n]) < 0x80:  # every string under 128 bytes: one-byte lengths
        if n <= _FEW_STRINGS:
            stops = list(accumulate(content[:n], initial=n))
            if stops[-1] != len(content):
                raise InvalidArgument(f"{c.what}: tensor_content's string lengths do not add up to its "
                                      f"{len(content) - n} bytes of strings")
            return stops
        sizes, body = np.frombuffer(content, np.uint8, count=n), n
    else:
        sizes, body = _long_lengths(c, content)
    stops = np.empty(n + 1, np.int64)
    stops[0] = body
    np.cumsum(sizes, out=stops[1:])
    stops[1:] += body
    if stops[-1] != len(content):
        raise InvalidArgument(f"{c.what}: tensor_content's string lengths do not add up to its "
                              f"{len(content) - body} bytes of strings")
    return stops


def _long_lengths(c: _Checked, content: bytes) -> tuple[np.ndarray, int]:
    """The ``c.elements`` varint32 lengths at the start of ``content`` (some over one byte),
    read with numpy; and where the strings begin."""
    n = c.elements
    head = np.frombuffer(content, np.uint8, count=min(len(content), 5 * n))
    ends = np.flatnonzero(head < 0x80)[:n]  # the last byte of each length
    if len(ends) < n:
        raise InvalidArgument(f"{c.what}: tensor_content is too short for {n} string lengths")
    starts = np.concatenate(([0], ends[:-1] + 1))
    widths = ends - starts + 1
    if widths.max() > 5:
        raise InvalidArgument(f"{c.what}: tensor_content holds a string length over 5 bytes")
    sizes = np.zeros(n, np.uint64)
    for k in range(int(widths.max())):
        longer = widths > k
        sizes[longer] |= (head[starts[longer] + k] & 0x7F).astype(np.uint64) << np.uint64(7 * k)
    if sizes.max() >> np.uint64(32):
        raise InvalidArgument(f"{c.what}: tensor_content holds a string length over 32 bits")
    return sizes, int(ends[-1]) + 1


def _build(c: _Checked) -> np.ndarray:
    kind = c.kind
    if c.stops is not None:
        stops = c.stops if isinstance(c.stops, list) else c.stops.tolist()
        values = np.empty(c.elements, dtype=object)
        content = c.content
        values[:] = [content[a:b] for a, b in zip(stops, stops[1:])]
        return values.reshape(c.shape)
    if c.content:
        return np.frombuffer(c.content, dtype=kind.dtype).copy().reshape(c.shape)
    if c.elements == 0:
        return np.zeros(c.shape, kind.dtype)
    repeated = getattr(c.proto, kind.field)
    if kind.string:
        values = np.empty(len(repeated), dtype=object)
        values[:] = list(repeated)
    elif kind.field == "float8_val":
        values = np.frombuffer(repeated, dtype=np.uint8).copy().view(kind.dtype)
    else:
        values = _read(c, repeated)
    if len(values) == 1 and c.elements != 1:
        values = np.repeat(values, c.elements)
    return values.reshape(c.shape)


def _read(c: _Checked, repeated) -> np.ndarray:
    kind = c.kind
    count = len(repeated)
    if kind.narrow:
        # int_val / half_val are int32 on the wire: the value must fit the element type.
        wide = np.fromiter(repeated, dtype=np.int64, count=count)
        info = np.iinfo(kind.wire)
        if count and (wide.min() < info.min or wide.max() > info.max):
            raise InvalidArgument(
                f"{c.what}: {kind.field} holds a value outside "
                f"{_dt_name(c.proto.dtype)}'s range [{info.min}, {info.max}]")
        values = wide.astype(kind.wire)
    else:
        values = None
        if kind.wire.kind == "f":  # bit for bit (a Python float would quiet a signalling NaN)
            values = packed_values(c.proto, kind.number, kind.wire, count)
        if values is None:
            values = np.fromiter(repeated, dtype=kind.wire, count=count)
    if kind.view:
        values = values.view(kind.dtype)
    return values


def packed_values(proto: Message, number: int, wire: np.dtype, count: int) -> np.ndarray | None:
    """The ``count`` values of packed fixed-width field ``number`` of any message (a
    TensorProto's ``float_val``, a v2 ``InferTensorContents``' ``fp32_contents``), bit for
    bit, read from the proto's own serialization (protobuf's wire format: one packed run per
    field, as protobuf writes it): ~2 us at any size, where ``np.fromiter`` over the field
    takes 22 us at 512 values and 350 us at 8192. None if it is not there as expected (the
    caller then reads the field)."""
    data = proto.SerializeToString()
    i, end = 0, len(data)
    while i < end:
        key, i = _varint_at(data, i)
        wire_type = key & 7
        if wire_type == 2:
            size, i = _varint_at(data, i)
            if key >> 3 == number:
                if size != count * wire.itemsize:
                    return None
                return np.frombuffer(data, wire, count=count, offset=i).copy()
            i += size
        elif wire_type == 0:
            _, i = _varint_at(data, i)
        elif wire_type in (1, 5):
            i += 8 if wire_type == 1 else 4
        else:
            return None
    return None


def _varint_at(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def to_proto(array: np.ndarray, into: tensor_pb2.TensorProto | None = None, *,
             content: bool = False) -> tensor_pb2.TensorProto:
    """The proto TensorFlow's C++ ``Tensor`` writes, as TF Serving answers with it: by default
    ``AsProtoField`` (every value in its dtype's typed field, nothing in ``tensor_content``:
    what clients reading ``outputs[k].float_val`` expect); with ``content``
    ``AsProtoTensorContent`` (every value in ``tensor_content``, strings as TensorFlow's
    encoded string list: ``--enable_serialization_as_tensor_content``).

    ``into``: an empty proto to fill and return instead of a new one (a response's map
    entry, which would otherwise take a copy)."""
    proto = tensor_pb2.TensorProto() if into is None else into
    writer = _WRITERS.get(array.dtype)
    if writer is None:
        raise ServingError(f"A tensor of numpy dtype {array.dtype} cannot be sent: TF Serving has no such dtype")
    proto.dtype = writer.enum
    shape = proto.tensor_shape
    shape.SetInParent()  # a scalar still carries an (empty) shape, as TensorFlow writes it
    for size in array.shape:
        shape.dim.add(size=size)
    if array.size:
        (writer.content if content else writer.fields)(proto, array.ravel())
    return proto


class _Writer:
    """How one numpy dtype goes into a TensorProto (tensor.cc's ``ProtoHelper<T>::Fill`` and
    ``Helper<T>::Encode``)."""

    __slots__ = ("enum", "field", "wire", "packed", "string")

    def __init__(self, enum: int, kind: _Kind) -> None:
        self.enum = enum
        self.field = kind.field
        self.string = kind.string
        self.wire = None if kind.string or kind.field == "float8_val" else kind.wire
        """The values as the field holds them (a view of the array's bytes)."""
        self.packed = _varint(kind.number << 3 | 2) if self.wire is not None and self.wire.kind in "fb" else None
        """Tag of the packed field, for fields whose wire bytes are the values' own
        (fixed-width floats; bools, one-byte varints): filled from the array's bytes."""

    def fields(self, proto: tensor_pb2.TensorProto, flat: np.ndarray) -> None:
        if self.string:
            proto.string_val.extend(_bytes_list(flat))
        elif self.wire is None:  # float8_val: one bytes field, a byte per value
            proto.float8_val = flat.tobytes()
        else:
            values = flat.view(self.wire)
            if self.packed is not None and (values.dtype.kind == "f" or len(values) >= _PACK_FROM):
                data = values.tobytes()  # little-endian, as the protobuf wire format
                proto.MergeFromString(self.packed + _varint(len(data)) + data)
            else:
                getattr(proto, self.field).extend(values.tolist())

    def content(self, proto: tensor_pb2.TensorProto, flat: np.ndarray) -> None:
        if self.string:
            values = _bytes_list(flat)
            lengths = [len(v) for v in values]
            head = bytes(lengths) if max(lengths) < 0x80 else b"".join(map(_varint, lengths))
            proto.tensor_content = head + b"".join(values)
        else:
            proto.tensor_content = flat.tobytes()


_PACK_FROM = 16
"""Bools from which their packed field is filled from the array's bytes (one C copy, then
one parse in protobuf's C core) rather than extended from a Python list: the list is cheaper
for a few values, the bytes 10x cheaper at 512. Floats always go as bytes, bit for bit (a
Python float would quiet a signalling NaN, which TensorFlow's C++ copies as it is)."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _bytes_list(flat: np.ndarray) -> list[bytes]:
    values = flat.tolist()
    if all(type(v) is bytes for v in values):  # what models and the codec give
        return values
    return [tf.compat.as_bytes(v) for v in values]  # str as UTF-8; anything else a TypeError


def _writers() -> dict[np.dtype, _Writer]:
    """numpy dtype -> its writer; each dtype has one DataType (the quantized ones are
    structured dtypes of their own)."""
    writers: dict[np.dtype, _Writer] = {}
    for enum, kind in _KINDS.items():
        writers.setdefault(kind.dtype, _Writer(enum, kind))
    return writers


_WRITERS = _writers()
