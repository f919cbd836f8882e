"""Tiny SavedModels, one per tensor shape the batch pipeline must handle fast.

Each does almost no compute (the benchmarks measure the pipeline around the model, not the
model) and has a numpy twin (``expected``) that tests compare answers with:

- ``scalar``: ``x`` float [None] -> ``y`` = 3x + 1
- ``vec1``: ``x`` float [None, 1] -> ``y`` [None, 1] = x / 2 + 2 (TF Serving's half_plus_two)
- ``vec16``: ``x`` float [None, 16] -> ``total`` [None] (the row sum) and ``scaled`` [None, 16]
  (2x): a multi-output model with a list-shaped output
- ``text``: ``text`` string [None] -> ``length`` int32 (UTF-8 characters) and ``upper`` string
- ``bytes``: ``data_bytes`` string [None] (``{"b64": ...}`` in JSON, by the ``_bytes`` suffix)
  -> ``size`` int32 (bytes)

``serving.examples.build`` puts them under ``<out>/shapes/<name>/1``; they are fixtures for
the batch benchmark and tests, so ``models.config`` does not list them. TensorFlow is
imported inside the builder only.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FOLDER = "shapes"
"""The folder under ``<out>`` (and the ``--only`` name) of these models."""

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class ShapeModel:
    """One model: its input specs, its function (in TensorFlow), and its numpy twin."""

    inputs: dict[str, tuple[str, tuple[int | None, ...]]]
    """Input name -> (dtype name, shape)."""
    graph: Callable[..., dict[str, Any]]
    """The signature's body, on tf tensors."""
    expected: Callable[..., Arrays]
    """The same function on numpy arrays (strings as object arrays of bytes)."""


def _text_expected(text: np.ndarray) -> Arrays:
    decoded = [t.decode() for t in text]
    return {"length": np.array([len(t) for t in decoded], np.int32),
            "upper": np.array([t.upper().encode() for t in decoded], dtype=object)}


def _tf() -> Any:
    import tensorflow as tf

    return tf


MODELS: dict[str, ShapeModel] = {
    "scalar": ShapeModel({"x": ("float32", (None,))}, lambda x: {"y": 3 * x + 1},
                         lambda x: {"y": 3 * x + 1}),
    "vec1": ShapeModel({"x": ("float32", (None, 1))}, lambda x: {"y": x / 2 + 2},
                       lambda x: {"y": x / 2 + 2}),
    "vec16": ShapeModel({"x": ("float32", (None, 16))},
                        lambda x: {"total": _tf().reduce_sum(x, axis=1), "scaled": 2 * x},
                        lambda x: {"total": x.sum(axis=1), "scaled": 2 * x}),
    "text": ShapeModel({"text": ("string", (None,))},
                       lambda text: {"length": _tf().strings.length(text, unit="UTF8_CHAR"),
                                     "upper": _tf().strings.upper(text, encoding="utf-8")},
                       _text_expected),
    "bytes": ShapeModel({"data_bytes": ("string", (None,))},
                        lambda data_bytes: {"size": _tf().strings.length(data_bytes)},
                        lambda data_bytes: {"size": np.array([len(b) for b in data_bytes], np.int32)}),
}

WORDS = ("ünïcode", "plain", "a longer phrase", "x", "tab\tand \"quote\"", "comma, inside")


def sample_inputs(name: str, n: int, seed: int) -> Arrays:
    """``n`` rows of inputs for model ``name``; strings as object arrays of bytes."""
    rng = np.random.default_rng(seed)
    inputs: Arrays = {}
    for key, (dtype, shape) in MODELS[name].inputs.items():
        if dtype == "float32":
            inputs[key] = rng.normal(size=(n, *shape[1:])).astype(np.float32)
        elif key.endswith("_bytes"):
            inputs[key] = np.array([rng.bytes(int(rng.integers(1, 40))) for _ in range(n)], dtype=object)
        else:
            inputs[key] = np.array([f"{WORDS[i]} {j}".encode() for j, i in
                                    enumerate(rng.integers(0, len(WORDS), n))], dtype=object)
    return inputs


def builder(name: str) -> Callable[[Path], None]:
    """A function that saves and verifies model ``name`` in the folder it is given."""
    return lambda export_dir: build(export_dir, name)


def build(export_dir: Path, name: str) -> None:
    """Save model ``name`` with a ``serving_default`` signature; check it against ``expected``."""
    import tensorflow as tf

    model = MODELS[name]
    specs = [tf.TensorSpec(shape, getattr(tf, dtype), name=key)
             for key, (dtype, shape) in model.inputs.items()]
    module = tf.Module()
    module.serve = tf.function(model.graph, input_signature=specs)
    tf.saved_model.save(module, str(export_dir), signatures={"serving_default": module.serve})
    fn = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    inputs = sample_inputs(name, 8, seed=0)
    got = {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}
    want = model.expected(**inputs)
    assert set(got) == set(want), f"{name}: outputs {sorted(got)}, expected {sorted(want)}"
    for key, value in want.items():
        if value.dtype == object:
            assert got[key].tolist() == value.tolist(), f"{name}.{key}"
        else:
            np.testing.assert_allclose(got[key], value, rtol=1e-6, err_msg=f"{name}.{key}")
