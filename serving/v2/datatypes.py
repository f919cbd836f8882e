"""The Open Inference Protocol's tensor datatypes, and which TensorFlow dtype each one is.

One row per v2 datatype (the tables of ``inference_rest.md`` / ``inference_grpc.md``; BF16
from the gRPC raw-contents comment and Triton): its bytes per element in binary form, the
numpy dtype of the decoded array (the same arrays TF Serving's API decodes to, so a v2 and
a TF Serving request merge into one batch: DT_STRING is an object array of ``bytes``,
DT_BFLOAT16 is ``ml_dtypes.bfloat16`` as TensorFlow's own), TensorFlow's name for it, and
the gRPC ``InferTensorContents`` field holding its values (none for FP16 and BF16: raw
only). TensorFlow dtypes without a row (complex, quantized, float8, resource, variant)
cannot be sent or answered over v2.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

from serving.errors import InvalidArgument
from serving.runtime.shapes import label, what
from serving.runtime.signature import STRING, TensorSpec


@dataclass(frozen=True)
class Datatype:
    """One v2 datatype."""

    name: str
    """The v2 name (``FP32``)."""
    dtype: np.dtype
    """The numpy dtype of decoded arrays."""
    dt_name: str
    """TensorFlow's name (``DT_FLOAT``), as ``TensorSpec.dtype_name`` holds it."""
    field: str | None
    """The gRPC ``InferTensorContents`` field of its values; None: raw contents only."""
    itemsize: int | None
    """Bytes per element in binary form; None: BYTES, each element length-prefixed."""
    wire: np.dtype = field(init=False)
    """``dtype`` little-endian, as binary data holds it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "wire", self.dtype.newbyteorder("<"))


def _table() -> tuple[Datatype, ...]:
    rows = [Datatype("BOOL", np.dtype(np.bool_), "DT_BOOL", "bool_contents", 1)]
    for kind in ("uint", "int"):  # 8 to 32 bits travel in the 32-bit field, range-checked
        rows += [Datatype(f"{kind.upper()}{bits}", np.dtype(f"{kind}{bits}"), f"DT_{kind.upper()}{bits}",
                          f"{kind}{'64' if bits == 64 else ''}_contents", bits // 8) for bits in (8, 16, 32, 64)]
    rows += [
        Datatype("FP16", np.dtype(np.float16), "DT_HALF", None, 2),
        Datatype("BF16", np.dtype(ml_dtypes.bfloat16), "DT_BFLOAT16", None, 2),
        Datatype("FP32", np.dtype(np.float32), "DT_FLOAT", "fp32_contents", 4),
        Datatype("FP64", np.dtype(np.float64), "DT_DOUBLE", "fp64_contents", 8),
        Datatype("BYTES", STRING, "DT_STRING", "bytes_contents", None),
    ]
    return tuple(rows)


DATATYPES = _table()
BY_NAME = {dt.name: dt for dt in DATATYPES}
_BY_DT_NAME = {dt.dt_name: dt for dt in DATATYPES}
_BY_DTYPE = {dt.dtype: dt for dt in DATATYPES}
BYTES = BY_NAME["BYTES"]
BOOL = BY_NAME["BOOL"]


def by_name(value: object, name: str, role: str = "Input") -> Datatype:
    """The datatype a client declared for tensor ``name``; InvalidArgument naming the tensor
    if ``value`` is not a v2 datatype's name."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{what(role, name)}: 'datatype' must be a string, one of {', '.join(BY_NAME)}; "
                              f"got {type(value).__name__}")
    datatype = BY_NAME.get(value)
    if datatype is None:
        raise InvalidArgument(f"{what(role, name)} has datatype {label(value)}, which is not one of the "
                              f"Open Inference Protocol's: {', '.join(BY_NAME)}")
    return datatype


def for_dtype(dtype: np.dtype) -> Datatype | None:
    """The datatype of arrays of numpy ``dtype``; None if v2 has none."""
    return _BY_DTYPE.get(dtype)


def for_spec(spec: TensorSpec) -> Datatype | None:
    """The datatype of a signature's input or output; None if v2 has none for its dtype."""
    return _BY_DT_NAME.get(spec.dtype_name) if spec.dtype_name else _BY_DTYPE.get(spec.dtype)


def type_name(spec: TensorSpec) -> str:
    """What metadata calls the tensor's type: its v2 datatype, else TensorFlow's name without
    ``DT_`` (``COMPLEX64``: not a v2 datatype, but saying so beats failing the whole call)."""
    datatype = for_spec(spec)
    if datatype is not None:
        return datatype.name
    return (spec.dtype_name or str(spec.dtype)).removeprefix("DT_")


def check(declared: object, spec: TensorSpec) -> Datatype:
    """The datatype of an input whose client declared ``declared`` for the signature input
    ``spec``: InvalidArgument naming the input unless it is exactly the model's (no coercion,
    as Triton)."""
    datatype = by_name(declared, spec.name)
    expected = for_spec(spec)
    if expected is None:
        raise InvalidArgument(f"{what('Input', spec.name)}: the model expects {spec.dtype_name or spec.dtype}, "
                              "which no Open Inference Protocol datatype carries")
    if datatype is not expected:
        raise InvalidArgument(f"{what('Input', spec.name)} has datatype {datatype.name}; "
                              f"the model expects {expected.name}")
    return datatype
