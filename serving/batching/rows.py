"""Pure row arithmetic on ``dict[str, np.ndarray]`` tensors: merge, slice, pad, split.

Kept apart from the queue and timer so it can be tested exhaustively without an event
loop. Dimension 0 is the row (batch) dimension throughout.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

Tensors = dict[str, np.ndarray]


class BatchShapeError(Exception):
    """The model broke the batching contract: an output's dimension 0 is not the batch size."""


def merge_key(tensors: Tensors) -> Hashable:
    """Requests can share a batch only if their names, dtypes and row shapes agree."""
    return tuple(sorted((name, t.dtype, t.shape[1:]) for name, t in tensors.items()))


def slice_rows(tensors: Tensors, start: int, stop: int) -> Tensors:
    """Rows ``start:stop`` of every tensor (views, no copy)."""
    return {name: t[start:stop] for name, t in tensors.items()}


def concat(parts: Sequence[Tensors]) -> Tensors:
    """Stack the rows of several requests, in order. One part is returned as is."""
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def pad_rows(tensors: Tensors, rows: int, target: int) -> Tensors:
    """Pad to ``target`` rows by repeating the last row (TF Serving's allowed_batch_sizes)."""
    if target == rows:
        return tensors
    extra = target - rows
    return {
        name: np.concatenate([t, np.repeat(t[-1:], extra, axis=0)]) for name, t in tensors.items()
    }


def split_rows(outputs: Tensors, sizes: Sequence[int]) -> list[Tensors]:
    """Cut a batch's outputs back into per-part outputs of ``sizes`` rows each.

    Raises BatchShapeError if an output does not have ``sum(sizes)`` rows (padding rows,
    if any, must have been cut off before).
    """
    total = sum(sizes)
    for name, t in outputs.items():
        if t.ndim == 0 or t.shape[0] != total:
            raise BatchShapeError(
                f"output '{name}' has shape {list(t.shape)}; expected {total} rows"
            )
    parts = []
    start = 0
    for size in sizes:
        parts.append(slice_rows(outputs, start, start + size))
        start += size
    return parts


def first_rows(outputs: Tensors, rows: int) -> Tensors:
    """Drop padding rows."""
    return {name: t[:rows] for name, t in outputs.items()}


def allowed_size(rows: int, allowed: Sequence[int]) -> int:
    """The smallest allowed batch size that holds ``rows`` (``rows`` if none are set)."""
    for size in allowed:
        if size >= rows:
            return size
    return rows
