"""The shape and size rules a client's tensor passes before anything is allocated for it.

One module for both wire formats that carry shapes from the network: TF Serving's
TensorProto (``serving.runtime.tensors``) and the Open Inference Protocol (``serving.v2``),
so a rule is one edit. No TensorFlow here.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

from serving.errors import InvalidArgument, PayloadTooLarge
from serving.runtime.signature import TensorSpec, shape_text

MAX_RANK = 64
"""numpy's limit (``NPY_MAXDIMS``). TensorFlow allows 254, but a tensor of more than 64
dimensions cannot become an array, so it is refused by name instead of failing later."""
MAX_ELEMENTS = ((1 << 63) - 1) // 16
"""What numpy can index, in elements of the widest dtype (complex128)."""
_NAME_CHARS = 64


@dataclass(frozen=True)
class TensorLimits:
    """What a request's tensors may decode to; ``None``: unbounded."""

    max_rows: int | None = None
    """Dimension 0 of each batched tensor (``--max_rows_per_request``)."""
    max_bytes: int | None = None
    """The decoded arrays together (``--max_request_bytes``); a string element counts its
    pointer (the strings themselves are in the request, which the transport already bounds)."""


UNBOUNDED = TensorLimits()


def label(name: str) -> str:
    """A client's name for messages, quoted, a hostile long one cut short: 'name'."""
    return f"'{name}'" if len(name) <= _NAME_CHARS else f"'{name[:_NAME_CHARS]}...'"


def what(role: str, name: str) -> str:
    """How messages call a tensor: "Input 'name'"."""
    return f"{role} {label(name)}"


def elements(shape: tuple[int, ...], itemsize: int, limits: TensorLimits, spec: TensorSpec | None,
             role: str, name: str, type_name: str) -> int:
    """The number of elements of ``shape``, once it is a shape a tensor may have: at most
    ``MAX_RANK`` dimensions, none negative, a product numpy can index (the zeros left out
    too, as numpy checks it), at most ``limits.max_rows`` in dimension 0 unless ``spec``
    says dimension 0 is not a batch, and at most ``limits.max_bytes`` decoded at
    ``itemsize`` bytes an element. Otherwise InvalidArgument (PayloadTooLarge for a limit)
    naming the tensor; ``role``, ``name`` and ``type_name`` are only for those messages.

    Called per tensor of every request: the messages are made only when one is raised."""
    check_rank(len(shape), role, name)
    if shape and min(shape) < 0:
        raise InvalidArgument(f"{what(role, name)} has a negative dimension in shape {shape_text(shape)}")
    count = prod(shape)
    if count > MAX_ELEMENTS or (not count and prod(filter(None, shape)) > MAX_ELEMENTS):
        raise InvalidArgument(
            f"{what(role, name)}: the number of elements of shape {shape_text(shape)} overflows")
    max_rows = limits.max_rows
    if max_rows is not None and shape and shape[0] > max_rows and (spec is None or spec.batched):
        raise PayloadTooLarge(f"{what(role, name)} has {shape[0]} rows; the limit is {max_rows}")
    max_bytes = limits.max_bytes
    if max_bytes is not None and count * itemsize > max_bytes:
        raise PayloadTooLarge(
            f"{what(role, name)} of shape {shape_text(shape)} and {type_name} would take "
            f"{count * itemsize} bytes decoded; the limit is {max_bytes}")
    return count


def check_rank(rank: int, role: str, name: str) -> None:
    """InvalidArgument if a tensor has more than ``MAX_RANK`` dimensions (a caller may ask
    before it builds the shape, to build no hostile million-dimension tuple)."""
    if rank > MAX_RANK:
        raise InvalidArgument(f"{what(role, name)} has {rank} dimensions; the most is {MAX_RANK}")


def check_total(nbytes: int, limits: TensorLimits) -> None:
    """PayloadTooLarge if a request's tensors together would take over ``limits.max_bytes``."""
    if limits.max_bytes is not None and nbytes > limits.max_bytes:
        raise PayloadTooLarge(f"The tensors would take {nbytes} bytes decoded; the limit is {limits.max_bytes}")
