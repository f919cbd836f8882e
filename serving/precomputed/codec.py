"""Rows of outputs <-> the bytes a store holds, exact in dtype, shape and output order.

One stored value is one row: a header naming each output (name, dtype, row shape), then
the outputs' data. Numbers are their raw little-endian bytes, so rows that share a header
(every row of a numeric model whose outputs have fixed shapes) are read back all at once:
one join and one ``np.frombuffer`` for a whole lookup instead of a parse per row (the
first format, TensorFlow's ``SessionRunResponse``, cost 1.1-1.4 ms for 64 rows, more
than natality's model call). Strings are length-prefixed bytes. Nothing is pickled: the
store is written by batch jobs and readable by others, and a value is only ever data.

    value   = MAGIC, u16 outputs, header * outputs, data * outputs
    header  = u16 name length, name (UTF-8), u8 dtype length, dtype (numpy's name,
              "string" for strings), u8 rank, u32 * rank dims
    data    = raw bytes (numbers) | (u32 length, bytes) * elements (strings)
"""
from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence

import ml_dtypes
import numpy as np

from serving.precomputed.api import CorruptEntry
from serving.runtime.signature import STRING

MAGIC = b"tfgw\x01"
_NUMERIC = {dtype.name.encode(): dtype.newbyteorder("<") for dtype in map(np.dtype, (
    np.float16, ml_dtypes.bfloat16, np.float32, np.float64, np.complex64, np.complex128, np.int8,
    np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_))}
"""What a model may answer besides strings, by numpy's name (bfloat16's ``str`` is "<V2")."""
_STRING_CODE = b"string"
_U16, _U32 = struct.Struct("<H"), struct.Struct("<I")


def encode_rows(outputs: Mapping[str, np.ndarray]) -> list[bytes]:
    """Each row (index along dimension 0) of a model call's ``outputs``, as stored."""
    arrays = {name: np.asarray(value) for name, value in outputs.items()}
    rows = {value.shape[0] if value.ndim else None for value in arrays.values()}
    if len(rows) != 1 or None in rows:
        raise ValueError("Outputs must share dimension 0 (one entry per row)")
    header = _header(arrays)
    if any(value.dtype == STRING for value in arrays.values()):
        return [header + b"".join(_data(value[i, ...]) for value in arrays.values())
                for i in range(rows.pop())]
    n = rows.pop()
    table = np.concatenate([np.ascontiguousarray(value, value.dtype.newbyteorder("<"))
                            .view(np.uint8).reshape(n, -1) for value in arrays.values()], axis=1)
    return [header + row.tobytes() for row in table]


def _header(arrays: Mapping[str, np.ndarray]) -> bytes:
    parts = [MAGIC, _U16.pack(len(arrays))]
    for name, value in arrays.items():
        code = _STRING_CODE if value.dtype == STRING else value.dtype.name.encode()
        if code != _STRING_CODE and code not in _NUMERIC:
            raise ValueError(f"Output '{name}' has dtype {value.dtype}, which cannot be stored")
        encoded = name.encode()
        dims = value.shape[1:]
        parts += [_U16.pack(len(encoded)), encoded, bytes([len(code)]), code, bytes([len(dims)]),
                  struct.pack(f"<{len(dims)}I", *dims)]
    return b"".join(parts)


def _data(value: np.ndarray) -> bytes:
    if value.dtype != STRING:
        return np.ascontiguousarray(value, value.dtype.newbyteorder("<")).tobytes()
    items = [_string_bytes(item) for item in value.reshape(-1)]
    return b"".join(_U32.pack(len(item)) + item for item in items)


def _string_bytes(item: object) -> bytes:
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, (bytes, np.bytes_)):
        return bytes(item)
    raise ValueError(f"A string output holds {type(item).__name__}, not bytes")


def decode_rows(values: Sequence[bytes]) -> dict[str, np.ndarray]:
    """The rows ``values`` hold, stacked along a new dimension 0 in their order, as the
    model would have answered them in one call. ``CorruptEntry`` if one is not a stored
    row or the rows do not stack (other outputs, dtypes or shapes): a reader then asks
    the model instead of failing the request."""
    if not values:
        raise ValueError("No rows to decode")
    layout, header_end = _read_header(values[0])
    if all(code != _STRING_CODE for _, code, _ in layout):
        rows = _numeric_rows(values, layout, header_end)
        if rows is not None:
            return rows
    decoded = [_decode_one(value) for value in values]
    first = decoded[0]
    if any(row.keys() != first.keys() for row in decoded):
        raise CorruptEntry("Stored rows differ in their outputs or shapes")
    try:
        return {name: np.stack([row[name] for row in decoded]) for name in first}
    except (KeyError, ValueError):
        raise CorruptEntry("Stored rows differ in their outputs or shapes") from None


def _numeric_rows(values: Sequence[bytes], layout: list[tuple[str, bytes, tuple[int, ...]]],
                  header_end: int) -> dict[str, np.ndarray] | None:
    """All rows at once when they share the first one's header; None when they do not."""
    sizes = [_NUMERIC[code].itemsize * math.prod(dims) for _, code, dims in layout]
    length = header_end + sum(sizes)
    first = values[0]
    if len(first) != length:
        raise CorruptEntry("A stored row's data does not match its header")
    prefix = first[:header_end]
    if not all(len(value) == length and value.startswith(prefix) for value in values):
        return None
    table = np.frombuffer(b"".join(value[header_end:] for value in values), np.uint8)
    table = table.reshape(len(values), length - header_end)
    out, at = {}, 0
    for (name, code, dims), size in zip(layout, sizes):
        column = np.ascontiguousarray(table[:, at:at + size])
        out[name] = column.view(_NUMERIC[code]).reshape(len(values), *dims).astype(
            _NUMERIC[code].newbyteorder("="), copy=False)
        at += size
    return out


def _decode_one(value: bytes) -> dict[str, np.ndarray]:
    layout, at = _read_header(value)
    row = {}
    for name, code, dims in layout:
        count = math.prod(dims)
        if code == _STRING_CODE:
            items = []
            for _ in range(count):
                (size,), at = _unpack(_U32, value, at), at + 4
                items.append(_take(value, at, size))
                at += size
            strings = np.empty(count, dtype=object)
            strings[:] = items
            row[name] = strings.reshape(dims)
        else:
            dtype = _NUMERIC[code]
            data = _take(value, at, dtype.itemsize * count)
            at += len(data)
            row[name] = np.frombuffer(data, dtype).reshape(dims).astype(dtype.newbyteorder("="))
    if at != len(value):
        raise CorruptEntry("A stored row has bytes past its data")
    return row


def _read_header(value: bytes) -> tuple[list[tuple[str, bytes, tuple[int, ...]]], int]:
    """Each output's (name, dtype code, row shape), and where the data starts."""
    if not isinstance(value, bytes) or not value.startswith(MAGIC):
        raise CorruptEntry("A stored value is not a row this gateway wrote")
    at = len(MAGIC)
    (count,), at = _unpack(_U16, value, at), at + 2
    layout, names = [], set()
    for _ in range(count):
        (size,), at = _unpack(_U16, value, at), at + 2
        try:
            name = _take(value, at, size).decode()
        except UnicodeDecodeError:
            raise CorruptEntry("A stored row names an output in bytes that are not UTF-8") from None
        at += size
        code_size, at = _take(value, at, 1)[0], at + 1
        code = _take(value, at, code_size)
        at += code_size
        if code != _STRING_CODE and code not in _NUMERIC:
            raise CorruptEntry(f"A stored row has an unknown dtype {code!r}")
        rank, at = _take(value, at, 1)[0], at + 1
        dims = struct.unpack(f"<{rank}I", _take(value, at, 4 * rank))
        at += 4 * rank
        if name in names:
            raise CorruptEntry("A stored row names one output twice")
        names.add(name)
        layout.append((name, code, dims))
    return layout, at


def _unpack(shape: struct.Struct, value: bytes, at: int) -> tuple[int, ...]:
    return shape.unpack(_take(value, at, shape.size))


def _take(value: bytes, at: int, size: int) -> bytes:
    if at + size > len(value):
        raise CorruptEntry("A stored row ends before its data does")
    return value[at:at + size]

