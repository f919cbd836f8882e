"""A v2 tensor's ``shape`` as a client sent it (a JSON list, a gRPC ``repeated int64``),
checked before anything is allocated for it.

Only the v2 part lives here: the value must be a list of integers. The rules every tensor's
shape and size obey (rank, negative and overflowing dimensions, the row and byte limits)
are ``serving.runtime.shapes``', shared with TF Serving's TensorProto.
"""
from __future__ import annotations

from collections.abc import Sequence

from serving.errors import InvalidArgument
from serving.runtime.shapes import MAX_RANK, UNBOUNDED, TensorLimits, check_rank, elements, what
from serving.runtime.signature import TensorSpec
from serving.v2.datatypes import Datatype

_SEQUENCES: set[type] = {list, tuple}
"""Types whose values passed as sequences: the ABC check costs more than the rest of
``check``. Only classes the code defines (JSON's list, protobuf's repeated container), so
it stays small whatever clients send."""


def check(value: object, datatype: Datatype, name: str, limits: TensorLimits = UNBOUNDED,
          spec: TensorSpec | None = None, role: str = "Input") -> tuple[tuple[int, ...], int]:
    """``value`` as a shape and its number of elements, once it is a list of integers (not
    booleans) that passes ``serving.runtime.shapes.elements`` with ``limits`` (dimension 0
    is a batch unless ``spec`` says otherwise; a BYTES element counts as its pointer);
    InvalidArgument (PayloadTooLarge for a limit) naming the tensor otherwise."""
    kind = type(value)
    if kind not in _SEQUENCES:
        if not isinstance(value, Sequence) or isinstance(value, (str, bytes, bytearray)):
            raise InvalidArgument(f"{what(role, name)}: 'shape' must be a list of integers, "
                                  f"got {kind.__name__}")
        _SEQUENCES.add(kind)
    if len(value) > MAX_RANK:  # before a hostile million-dimension tuple is built
        check_rank(len(value), role, name)
    shape = tuple(value)
    for size in shape:
        if type(size) is not int:  # bool is an int subclass; numpy integers come from no parser
            raise InvalidArgument(f"{what(role, name)}: 'shape' must be a list of integers, "
                                  f"got a {type(size).__name__}")
    count = elements(shape, datatype.dtype.itemsize, limits, spec, role, name, datatype.name)
    return shape, count
