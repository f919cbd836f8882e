"""Protocol-free description of a serving signature, and input validation against it.

No TensorFlow import here: the REST codec, the batcher and the pipelines use these types
without paying for TensorFlow. ``serving.runtime.savedmodel`` builds them from a loaded
SavedModel.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from serving.errors import InvalidArgument

STRING = np.dtype(object)
"""DT_STRING tensors are numpy object arrays of ``bytes``."""

DT_NAMES = {
    np.dtype(np.float16): "DT_HALF", np.dtype(np.float32): "DT_FLOAT",
    np.dtype(np.float64): "DT_DOUBLE", np.dtype(np.int8): "DT_INT8",
    np.dtype(np.int16): "DT_INT16", np.dtype(np.int32): "DT_INT32",
    np.dtype(np.int64): "DT_INT64", np.dtype(np.uint8): "DT_UINT8",
    np.dtype(np.uint16): "DT_UINT16", np.dtype(np.uint32): "DT_UINT32",
    np.dtype(np.uint64): "DT_UINT64", np.dtype(np.bool_): "DT_BOOL", STRING: "DT_STRING",
}
"""TensorFlow's names of the dtypes requests and answers carry, for messages."""

PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output of a signature."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...] | None
    """Dimensions (``None``: any size); ``None`` as a whole: unknown rank."""
    dtype_name: str = ""
    """TF's name for the dtype (``DT_FLOAT``), for messages and metadata."""

    @property
    def is_string(self) -> bool:
        return self.dtype == STRING

    @property
    def batched(self) -> bool:
        """Whether dimension 0 is a batch dimension that requests can be merged along."""
        return self.shape is None or (len(self.shape) > 0 and self.shape[0] is None)


@dataclass(frozen=True)
class SignatureSpec:
    """A signature's method and its named inputs and outputs."""

    name: str
    method_name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    input_order: tuple[str, ...] = field(default=())

    @cached_property
    def batchable(self) -> bool:
        """Whether requests for this signature can be merged along dimension 0 (asked per
        request, so worked out once)."""
        return all(spec.batched for spec in self.inputs.values())

    def validate(self, tensors: dict[str, np.ndarray]) -> int | None:
        """Check names, dtypes and shapes; return the shared batch size, or None.

        None means the inputs do not share a dimension 0 (columnar requests may do so), so
        the request cannot be merged with others and runs alone.
        """
        if tensors.keys() != self.inputs.keys():
            self.check_names(tensors)
        rows: set[int] = set()
        for name, value in tensors.items():
            spec = self.inputs[name]
            _check_dtype(spec, value)
            _check_shape(spec, value.shape)
            rows.add(value.shape[0] if value.ndim else -1)
        if len(rows) == 1 and -1 not in rows and self.batchable:
            return rows.pop()
        return None

    def check_names(self, names: Collection[str]) -> None:
        """InvalidArgument unless ``names`` are exactly the inputs."""
        missing = [name for name in self.inputs if name not in names]
        if missing:
            raise InvalidArgument(
                f"Missing input(s) {sorted(missing)} for signature '{self.name}'; "
                f"expected {sorted(self.inputs)}"
            )
        extra = [name for name in names if name not in self.inputs]
        if extra:
            raise InvalidArgument(
                f"Unknown input(s) {_some(extra)} for signature '{self.name}'; "
                f"expected {sorted(self.inputs)}"
            )


_LISTED = 10
"""A client's names a message lists at most: a gRPC status travels in a trailer that
clients refuse over 16 KB (a request listing 100,000 unknown inputs made the whole call
RESOURCE_EXHAUSTED instead of INVALID_ARGUMENT)."""


def _some(names: Collection[str]) -> str:
    """A client's names for a message: the first ``_LISTED`` sorted, long ones cut short."""
    ordered = sorted(names)
    shown = [name if len(name) <= 64 else name[:64] + "..." for name in ordered[:_LISTED]]
    more = len(ordered) - len(shown)
    return f"{shown}" + (f" and {more} more" if more else "")


def dtype_name(dtype: np.dtype) -> str:
    """TensorFlow's name for ``dtype`` (``DT_FLOAT``), or numpy's if it has none."""
    return DT_NAMES.get(dtype) or str(dtype)


def shape_text(shape: tuple[int, ...]) -> str:
    """A shape as TF Serving writes it in messages: ``[2,3]``."""
    return "[" + ",".join(str(size) for size in shape) + "]"


def find_signature(specs: dict[str, SignatureSpec], name: str) -> SignatureSpec:
    """``specs[name]``, or TF Serving's error for a signature the model does not have."""
    try:
        return specs[name]
    except KeyError:
        raise InvalidArgument(f"Serving signature name: \"{name}\" not found in signature def") from None


def _check_dtype(spec: TensorSpec, value: np.ndarray) -> None:
    if spec.is_string != (value.dtype == STRING) or (
        not spec.is_string and value.dtype != spec.dtype
    ):
        raise InvalidArgument(
            f"Input '{spec.name}' expects {spec.dtype_name or spec.dtype}, got {value.dtype}"
        )


def _check_shape(spec: TensorSpec, shape: tuple[int, ...]) -> None:
    """Accept shapes the model accepts.

    Besides exact compatibility, TF1 graphs (TF Serving's own test models among them) take
    inputs that omit trailing dimensions of size 1, e.g. ``[3]`` for ``[-1, 1]``; TF Serving
    passes those through, so do we.
    """
    expected = spec.shape
    if expected is None or _fits(expected, shape):
        return
    trimmed = expected
    while len(trimmed) > len(shape) and trimmed[-1] == 1:
        trimmed = trimmed[:-1]
    if _fits(trimmed, shape):
        return
    want = [-1 if d is None else d for d in expected]
    raise InvalidArgument(
        f"Input '{spec.name}' expects shape {want}, got {list(shape)}"
    )


def _fits(expected: tuple[int | None, ...], shape: tuple[int, ...]) -> bool:
    if len(expected) != len(shape):
        return False
    for want, got in zip(expected, shape):
        if want is not None and want != got:
            return False
    return True
