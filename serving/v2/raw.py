"""Binary tensor data <-> numpy: the layout of the binary tensor extension (REST) and of
``raw_input_contents`` / ``raw_output_contents`` (gRPC).

Row-major, no padding, little-endian, each element its datatype's size (BOOL one byte, 0
or 1; BF16 the high half of a float32, which is ml_dtypes.bfloat16's own layout); BYTES
elements are each a 4-byte little-endian unsigned length and then that many bytes, back to
back. Decoding checks the sizes before it allocates anything: a fixed-size tensor needs
exactly elements x size bytes; a BYTES tensor at least 4 bytes an element, and each length
must stay inside the data, with exactly ``elements`` strings filling it (MLServer's
``raw.py`` trusts each length prefix; a hostile one cannot make us allocate here). So a
decoded array is never much more than the bytes it came from.
"""
from __future__ import annotations

import struct
from typing import NoReturn

import numpy as np

from serving.errors import InvalidArgument, ServingError
from serving.runtime.shapes import what
from serving.runtime.signature import shape_text
from serving.v2 import shapes
from serving.v2.datatypes import BOOL, Datatype

_LENGTH = struct.Struct("<I")
_MAX_LENGTH = (1 << 32) - 1


def decode(data: bytes | bytearray | memoryview, datatype: Datatype, shape: object, name: str) -> np.ndarray:
    """Input ``name``'s binary ``data`` as an array of ``shape`` (a client's shape: checked
    here too, so this is safe on its own; a request's inputs go through ``decode_checked``
    with the shapes ``shapes.check`` passed, with the request's limits, before any was
    decoded)."""
    dims, count = shapes.check(shape, datatype, name)
    return decode_checked(data, datatype, dims, count, name)


def decode_checked(data: bytes | bytearray | memoryview, datatype: Datatype, dims: tuple[int, ...],
                   count: int, name: str) -> np.ndarray:
    """Input ``name``'s binary ``data`` as an array of ``dims``, ``count`` elements: what
    ``shapes.check`` made of the client's shape (never anything else: the sizes below are
    checked against ``count``, which must already be a checked one). A writable copy: the
    runners and the batcher never see a read-only array. InvalidArgument naming the input
    and, for BYTES, the byte offset where the data goes wrong."""
    view = memoryview(data).cast("B")
    if datatype.itemsize is None:
        return _strings(view, dims, count, name)
    size, need = view.nbytes, count * datatype.itemsize
    if size != need:
        raise InvalidArgument(f"{what('Input', name)} has {size} bytes of binary data; shape "
                              f"{shape_text(dims)} of {datatype.name} needs {need}")
    if datatype is BOOL and count and np.frombuffer(view, np.uint8).max() > 1:
        raise InvalidArgument(f"{what('Input', name)}: a BOOL element is a byte 0 or 1")
    # One copy into a writable buffer; astype swaps bytes on a big-endian machine only.
    return np.frombuffer(bytearray(view), datatype.wire).astype(datatype.dtype, copy=False).reshape(dims)


def _strings(view: memoryview, dims: tuple[int, ...], count: int, name: str) -> np.ndarray:
    size = view.nbytes
    if count * _LENGTH.size > size:
        raise InvalidArgument(f"{what('Input', name)} has {size} bytes of binary data, too few for "
                              f"{count} BYTES elements of at least {_LENGTH.size} bytes each")
    # Slices of bytes are bytes: one copy of a region that is not bytes yet, bounded by it.
    data = view.obj if type(view.obj) is bytes and size == len(view.obj) else view.tobytes()
    # The loop checks nothing a slice needs: a length past the end makes a shorter slice (the
    # slices never add up to more than the data) and then the next unpack, or the final
    # count, fails; _bad_strings then says where.
    unpack = _LENGTH.unpack_from
    values = [b""] * count
    offset = 0
    try:
        for i in range(count):
            start = offset + 4
            offset = start + unpack(data, offset)[0]
            values[i] = data[start:offset]
    except struct.error:
        offset = -1
    if offset != size:
        _bad_strings(data, count, name)
    return np.array(values, dtype=object).reshape(dims)  # bytes are scalars to numpy: never nested


def _bad_strings(data: bytes, count: int, name: str) -> NoReturn:
    """InvalidArgument saying where ``count`` length-prefixed strings do not fill ``data``."""
    size = len(data)
    offset = 0
    for i in range(count):
        if offset + _LENGTH.size > size:
            raise InvalidArgument(f"{what('Input', name)}: BYTES element {i}'s length at byte {offset} "
                                  f"runs past the end of its {size} bytes")
        (length,) = _LENGTH.unpack_from(data, offset)
        start = offset + _LENGTH.size
        offset = start + length
        if offset > size:
            raise InvalidArgument(f"{what('Input', name)}: BYTES element {i} at byte {start - _LENGTH.size} "
                                  f"claims {length} bytes, past the end of its {size} bytes")
    raise InvalidArgument(f"{what('Input', name)}: {size - offset} bytes left over at byte {offset}, "
                          f"after its {count} BYTES elements")


def encode(array: np.ndarray, datatype: Datatype) -> bytes:
    """``array``'s binary form as ``datatype``. The array must be of the datatype's dtype
    (BYTES: ``bytes`` elements, ``str`` ones as UTF-8): an output of another is the server's
    error, not the client's (ServingError: 500)."""
    if datatype.itemsize is None:
        if array.dtype != datatype.dtype:
            raise ServingError(f"An output of dtype {array.dtype} cannot be sent as BYTES")
        return b"".join([part for value in array.ravel().tolist() for part in _string(value)])
    if array.dtype != datatype.dtype:
        raise ServingError(f"An output of dtype {array.dtype} cannot be sent as {datatype.name}")
    return np.ascontiguousarray(array, datatype.wire).tobytes()


def _string(value: object) -> tuple[bytes, bytes]:
    if type(value) is not bytes:
        if not isinstance(value, str):
            raise ServingError(f"A BYTES output holds a {type(value).__name__}, not bytes")
        value = value.encode()
    if len(value) > _MAX_LENGTH:
        raise ServingError(f"A BYTES output element of {len(value)} bytes is over the 4 GiB - 1 "
                           "a length prefix can say")
    return _LENGTH.pack(len(value)), value
