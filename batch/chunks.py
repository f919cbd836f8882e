"""Chunks: the rows the pipelines move, in columnar form, and the row decoding that makes them.

Shared by the batch and streaming pipelines, and free of Beam. Row dicts (JSON objects,
CSV rows) are checked against a signature: each malformed row is returned with the reason
it was refused, never dropped; well-formed rows become one numpy array per input. A string
input's value may be ``{"b64": ...}`` (TF Serving's JSON for bytes).
"""
from __future__ import annotations

import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from serving.batching.rows import Tensors
from serving.runtime.signature import SignatureSpec, TensorSpec

DEAD_LETTER = "dead_letter"
"""The tag of the pipelines' dead-letter outputs (refused and failed rows or messages)."""


@dataclass
class Chunk:
    """Rows in columnar form, with what each row carries to its output (its input as read)
    and, if the job names a key field, each row's key."""

    tensors: Tensors
    passthrough: Sequence[Any] = field(default_factory=list)
    keys: Sequence[Any] | None = None
    """A list or a numpy array."""

    def __len__(self) -> int:
        return len(self.passthrough)


@dataclass
class ChunkResult:
    """A chunk's outputs for the rows that ran, and (row index, reason) for those that failed."""

    chunk: Chunk
    outputs: Tensors | None
    ok_rows: list[int]
    failures: list[tuple[int, str]]
    model_version: int

    def without(self, positions: Sequence[int]) -> ChunkResult:
        """This result with the ok rows at ``positions`` (indices into ``ok_rows``, and so
        into ``outputs``) left out: neither run nor failed, for whoever took them out."""
        dropped = set(positions)
        keep = [i for i in range(len(self.ok_rows)) if i not in dropped]
        outputs = None if self.outputs is None or not keep else {
            name: value[keep] for name, value in self.outputs.items()}
        return ChunkResult(self.chunk, outputs, [self.ok_rows[i] for i in keep], self.failures,
                           self.model_version)


def dead_letter_text(row: Any, reason: str) -> str:
    """A dead letter: the input row as it was read (a JSON line as JSON when it parses)
    and why it was refused."""
    record = row
    if isinstance(row, bytes):
        try:
            record = orjson.loads(row)
        except orjson.JSONDecodeError:
            record = row.decode("utf-8", "replace").rstrip("\n")
    return orjson.dumps({"input": record, "error": reason}, default=str).decode()


def reason_kind(reason: str) -> str:
    """A dead letter's reason without its per-row detail, to count dead letters by: the text
    before its first ": " ("not JSON", "input 'age'", "inference failed", "not stored"), or
    the whole of a reason that has none ("missing key field 'id'"), at most 80 characters."""
    return reason.split(": ", 1)[0][:80]


def rows_to_chunk(rows: Sequence[Any], spec: SignatureSpec, key_field: str | None = None,
                  passthrough: Sequence[Any] | None = None) -> tuple[Chunk, list[tuple[Any, str]]]:
    """Decode ``rows`` (dicts keyed by input name) into a Chunk, and the refused rows.

    Each row carries ``passthrough[i]`` (default: the row itself) to its output or dead
    letter, and its ``key_field`` value as the chunk's key.
    """
    carried = rows if passthrough is None else passthrough
    good: list[int] = []
    refused: list[tuple[Any, str]] = []
    for i, row in enumerate(rows):
        reason = row_error(row, spec, key_field)
        if reason is None:
            good.append(i)
        else:
            refused.append((carried[i], reason))
    tensors = {name: _column([rows[i][name] for i in good], tensor) for name, tensor in spec.inputs.items()}
    keys = [rows[i][key_field] for i in good] if key_field else None
    return Chunk(tensors, [carried[i] for i in good], keys), refused


def row_error(row: Any, spec: SignatureSpec, key_field: str | None = None) -> str | None:
    """Why ``row`` cannot be fed to ``spec``'s inputs, or None."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    if key_field and key_field not in row:
        return f"missing key field '{key_field}'"
    missing = sorted(name for name in spec.inputs if name not in row)
    if missing:
        return f"missing input(s) {missing}"
    for name in sorted(spec.inputs):
        problem = _value_error(row[name], spec.inputs[name])
        if problem:
            return f"input '{name}': {problem}"
    return None


def _value_error(value: Any, tensor: TensorSpec) -> str | None:
    if tensor.shape is not None and len(tensor.shape) > 1:
        return _list_error(value, tensor)
    if tensor.is_string:
        if _is_b64(value):
            try:
                binascii.a2b_base64(value["b64"], strict_mode=True)
            except binascii.Error as error:
                return f"bad base64: {error}"
            return None
        return None if isinstance(value, (str, bytes)) else f"expected a string, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a number ({tensor.dtype_name}), got {value!r}"
    if tensor.dtype.kind != "f" and not float(value).is_integer():
        return f"expected an integer ({tensor.dtype_name}), got {value!r}"
    return None


def _list_error(value: Any, tensor: TensorSpec) -> str | None:
    """Why ``value`` is not one row of a list-shaped input: not a list, ragged, the wrong
    length, or the wrong kind of element."""
    assert tensor.shape is not None
    row_shape = list(tensor.shape[1:])
    if not isinstance(value, list):
        return f"expected a list for shape {list(tensor.shape)}"
    try:
        array = np.asarray(value)
    except ValueError:
        array = np.asarray(value, dtype=object)
    if array.dtype == object or array.ndim != len(row_shape) or any(
            want is not None and want != got for want, got in zip(row_shape, array.shape)):
        return f"expected a list of shape {row_shape} per row, got one of shape {list(array.shape)}"
    kinds = "SU" if tensor.is_string else "iuf" if tensor.dtype.kind == "f" else "iu"
    if array.size and array.dtype.kind not in kinds:
        return f"expected {tensor.dtype_name} values, got {array.dtype.name}"
    return None


def _is_b64(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def _column(values: list[Any], tensor: TensorSpec) -> np.ndarray:
    if tensor.is_string:
        return np.array([binascii.a2b_base64(v["b64"]) if _is_b64(v) else v.encode() if isinstance(v, str) else v
                         for v in values], dtype=object)
    if not values and tensor.shape is not None:
        return np.zeros((0, *(d or 0 for d in tensor.shape[1:])), dtype=tensor.dtype)
    return np.asarray(values, dtype=tensor.dtype)
