"""What classify and regress signatures must return, checked once in the core.

TF Serving's rules for a ClassificationResult (``classes`` DT_STRING and/or ``scores``
DT_FLOAT, both [batch_size, num_classes]) and a RegressionResult (``outputs`` DT_FLOAT,
[batch_size] or [batch_size, 1]). Checking here, not in each adapter, makes REST and gRPC
accept and refuse the same model outputs; the adapters only format what passed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serving.errors import InvalidArgument
from serving.runtime.signature import STRING, dtype_name, shape_text

FLOAT = np.dtype(np.float32)


@dataclass(frozen=True)
class Classifications:
    """Per example, one (label, score) per class; a missing tensor is None ("" labels or
    0.0 scores, as in TF Serving's ClassificationResult)."""

    labels: np.ndarray | None
    """[examples, classes] of bytes."""
    scores: np.ndarray | None
    """[examples, classes] of float32."""

    @property
    def shape(self) -> tuple[int, int]:
        tensor = self.labels if self.labels is not None else self.scores
        assert tensor is not None
        return tensor.shape[0], tensor.shape[1]

    def label_rows(self) -> list[list[str]]:
        """Labels as text ("" where there are none); bytes that are not UTF-8 get U+FFFD."""
        rows, width = self.shape
        if self.labels is None:
            return [[""] * width for _ in range(rows)]
        return [[item if type(item) is str else bytes(item).decode(errors="replace") for item in row]
                for row in self.labels.tolist()]


def classifications(outputs: dict[str, np.ndarray], examples: int) -> Classifications:
    """A classify signature's outputs for ``examples`` examples, or InvalidArgument."""
    labels, scores = outputs.get("classes"), outputs.get("scores")
    if labels is None and scores is None:
        raise InvalidArgument(
            'Expected classification outputs to contain at least one of "classes" or "scores"')
    for which, tensor, dtype in (("classes", labels, STRING), ("scores", scores, FLOAT)):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise InvalidArgument(
                f"Expected Tensor shape: [batch_size num_classes] but got {shape_text(tensor.shape)}")
        if tensor.dtype != dtype:
            raise InvalidArgument(
                f"Expected {which} Tensor of {dtype_name(dtype)}. Got: {dtype_name(tensor.dtype)}")
    if labels is not None and scores is not None and labels.shape != scores.shape:
        raise InvalidArgument(
            f"Tensors classes and scores should have the same shape. Got "
            f"{shape_text(labels.shape)} vs. {shape_text(scores.shape)}")
    result = Classifications(labels, scores)
    _check_examples("classifications", result.shape[0], examples)
    return result


def regressions(outputs: dict[str, np.ndarray], examples: int) -> np.ndarray:
    """A regress signature's ``outputs`` as one float32 value per example, or InvalidArgument."""
    values = outputs.get("outputs")
    if values is None:
        raise InvalidArgument("Could not find output tensor 'outputs'")
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise InvalidArgument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{shape_text(values.shape)}")
    if values.dtype != FLOAT:
        raise InvalidArgument(f"Expected output Tensor of DT_FLOAT. Got: {dtype_name(values.dtype)}")
    _check_examples("regressions", values.shape[0], examples)
    return values.reshape(-1)


def _check_examples(what: str, rows: int, examples: int) -> None:
    if rows != examples:
        raise InvalidArgument(f"Expected {examples} {what}, one per example, but the model returned {rows}")
