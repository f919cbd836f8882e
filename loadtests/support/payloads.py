"""Request payloads for the example models, shared by ``make bench`` and ``make loadtest``.

Rows come from the models' own samplers (``serving.examples``), whose right answers are
known, so any response can be checked. A request carries k rows; ``RowsMix`` says how often
each k is drawn. The same rows feed the REST API (TF Serving's row format, JPEGs as
``{"b64": ...}``) and the gRPC API (columns as numpy arrays, turned into TensorProtos by the
caller), and the Open Inference Protocol's infer (JSON or binary tensors). This
module imports no TensorFlow.
"""
from __future__ import annotations

import base64
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import orjson

Instance = dict[str, Any]
"""One row in TF Serving's JSON row format."""
Payload = TypeVar("Payload")

MODELS = ("natality", "image_classifier")
DISTINCT_ROWS = {"natality": 300, "image_classifier": 100}
"""Distinct rows per pool: enough that caches cannot help; JPEGs cost ~2 ms each to make."""


def instances(model: str, n: int, seed: int) -> list[Instance]:
    """``n`` distinct rows of ``model``'s serving signature, in TF Serving's row format."""
    if model == "natality":
        from serving.examples.natality import sample_rows

        rows = sample_rows(n, seed)
        return [{"is_male": str(rows["is_male"][i]),
                 "mother_age": round(float(rows["mother_age"][i]), 1),
                 "plurality": str(rows["plurality"][i]),
                 "gestation_weeks": round(float(rows["gestation_weeks"][i]), 1)}
                for i in range(n)]
    if model == "image_classifier":
        from serving.examples.image import sample_jpegs

        return [{"b64": base64.b64encode(jpeg).decode()} for jpeg in sample_jpegs(n, seed)]
    raise ValueError(f"no payloads for model {model!r}; known: {', '.join(MODELS)}")


@dataclass(frozen=True)
class KeyShare:
    """Requests whose rows carry a key in ``field``, a ``share`` of them keys that a batch
    job precomputed (``--prediction_store``): the hybrid batch + online split.

    Key ``k<i>`` is always distinct row i; the batch job is given the first half of the
    ``distinct`` rows (``precomputed``), and a pool draws its rows from that half with
    probability ``share`` and from the other half otherwise (``rows``).
    """

    field: str
    share: float
    distinct: int = 2000

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0 or self.distinct < 2:
            raise ValueError(f"a key share is within [0, 1] over at least 2 keys, got {self}")

    def precomputed(self, model: str, seed: int) -> list[Instance]:
        """The rows a batch job writes to the store (the first half of the keys)."""
        return self._keyed(model, seed)[:self.distinct // 2]

    def rows(self, model: str, seed: int) -> list[Instance]:
        """``distinct`` rows, ``round(share * distinct)`` of them precomputed ones."""
        keyed, half = self._keyed(model, seed), self.distinct // 2
        hits = round(self.share * self.distinct)
        return ([keyed[i % half] for i in range(hits)]
                + [keyed[half + i % (self.distinct - half)] for i in range(self.distinct - hits)])

    def _keyed(self, model: str, seed: int) -> list[Instance]:
        rows = instances(model, min(self.distinct, DISTINCT_ROWS[model]), seed)
        return [_with_key(model, rows[i % len(rows)], self.field, f"k{i}") for i in range(self.distinct)]


def _with_key(model: str, row: Instance, field: str, key: str) -> Instance:
    """``row`` with its key: natality's rows are objects of inputs already; an image row is
    the image itself (``{"b64": ...}``), which becomes one named input beside the key."""
    if model == "image_classifier":
        from serving.examples.image import INPUT

        return {INPUT: row, field: key}
    return {**row, field: key}


def predict_body(rows: list[Instance]) -> dict[str, Any]:
    return {"instances": rows}


def columns(model: str, rows: list[Instance]) -> dict[str, np.ndarray]:
    """The same rows as the signature's input columns (what a gRPC client sends)."""
    if model == "image_classifier":
        from serving.examples.image import INPUT

        if "b64" in rows[0]:
            rows = [{INPUT: row} for row in rows]
    return {name: (np.array(values, dtype=np.float32) if isinstance(values[0], float)
                   else np.array([base64.b64decode(v["b64"]) if isinstance(v, dict) else v
                                  for v in values], dtype=object))
            for name, values in ((name, [row[name] for row in rows]) for name in rows[0])}


def v2_infer(model: str, rows: list[Instance], binary: bool) -> tuple[bytes, dict[str, str]]:
    """The same rows as an Open Inference Protocol infer request (body, headers): the input
    columns with flat ``data``, or with the binary tensor extension as tritonclient sends
    them by default (``serving.v2.raw``'s encoding after the JSON head, every output asked
    for in binary too). ValueError for BYTES that are not UTF-8 in JSON (v2 JSON carries
    BYTES as text: the image model's JPEGs need ``binary``)."""
    from serving.v2 import raw
    from serving.v2.datatypes import for_dtype

    tensors, buffers = [], []
    for name, array in columns(model, rows).items():
        datatype = for_dtype(array.dtype)
        if datatype is None:
            raise ValueError(f"input {name!r} of {model}: no v2 datatype for {array.dtype}")
        tensor: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype.name}
        if binary:
            buffers.append(raw.encode(array, datatype))
            tensor["parameters"] = {"binary_data_size": len(buffers[-1])}
        else:
            tensor["data"] = [_json_text(v, name, model) for v in array.ravel().tolist()]
        tensors.append(tensor)
    head = orjson.dumps({"inputs": tensors, "parameters": {"binary_data_output": binary}})
    if not binary:
        return head, {"Content-Type": "application/json"}
    return head + b"".join(buffers), {"Content-Type": "application/octet-stream",
                                      "Inference-Header-Content-Length": str(len(head))}


def _json_text(value: Any, name: str, model: str) -> Any:
    if not isinstance(value, bytes):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise ValueError(f"input {name!r} of {model} holds bytes that are not UTF-8, which v2 JSON "
                         "cannot carry: send it with the binary tensor extension") from None


def check(model: str, body: dict[str, Any], response: dict[str, Any]) -> str | None:
    """None if ``response`` holds the right prediction for every row of ``body``, else why not."""
    rows = body["instances"]
    predictions = response.get("predictions") if isinstance(response, dict) else None
    if not isinstance(predictions, list) or len(predictions) != len(rows):
        return f"not {len(rows)} predictions: {str(response)[:200]}"
    checker = _check_natality if model == "natality" else _check_image
    for row, prediction in zip(rows, predictions, strict=True):
        if (why := checker(row, prediction)) is not None:
            return why
    return None


def _check_natality(row: Instance, prediction: Any) -> str | None:
    from serving.examples.natality import TOLERANCE_POUNDS, expected_weight

    want = float(expected_weight([row["is_male"]], [row["mother_age"]], [row["plurality"]],
                                 [row["gestation_weeks"]])[0])
    try:
        got = float(prediction)
    except (TypeError, ValueError):
        return f"not a weight: {prediction}"
    if not abs(got - want) <= TOLERANCE_POUNDS:
        return f"predicted {got:.3f} lb for {row}, expected {want:.3f}"
    return None


def _check_image(row: Instance, prediction: Any) -> str | None:
    from serving.examples.image import NUM_CLASSES, TOP_K

    try:
        scores, classes = prediction["scores"], prediction["classes"]
    except (KeyError, TypeError):
        return f"not a {{scores, classes}} prediction: {str(prediction)[:200]}"
    if len(scores) != TOP_K or len(classes) != TOP_K or not all(
            0 <= c < NUM_CLASSES for c in classes) or scores != sorted(scores, reverse=True):
        return f"not a top-{TOP_K}: {prediction}"
    return None


@dataclass(frozen=True)
class RowsMix:
    """How many rows a request carries: ``"1"`` always one, ``"1:0.9,8:0.1"`` one row nine
    times in ten and eight rows otherwise."""

    sizes: tuple[int, ...]
    weights: tuple[float, ...]

    @classmethod
    def parse(cls, text: str) -> RowsMix:
        sizes, weights = [], []
        try:
            for part in text.split(","):
                size, _, weight = part.partition(":")
                sizes.append(int(size))
                weights.append(float(weight) if weight else 1.0)
        except ValueError:
            raise ValueError(f"rows mix {text!r} is not SIZE[:WEIGHT],...") from None
        if not sizes or min(sizes) < 1 or min(weights) <= 0 or len(set(sizes)) != len(sizes):
            raise ValueError(f"rows mix {text!r}: sizes must be distinct and >= 1, weights > 0")
        total = sum(weights)
        return cls(tuple(sizes), tuple(w / total for w in weights))

    @property
    def mean_rows(self) -> float:
        return sum(s * w for s, w in zip(self.sizes, self.weights, strict=True))

    def __str__(self) -> str:
        return ",".join(f"{s}:{w:.3g}" for s, w in zip(self.sizes, self.weights, strict=True))


class RequestPool(Generic[Payload]):
    """Pre-encoded requests of every size in a mix, drawn at random (seeded) at send time.

    Each request's rows are a random pick of the pool's distinct rows, so k-row requests
    differ from one another, and nothing is generated or encoded while the load runs.
    """

    def __init__(self, model: str, mix: RowsMix, encode: Callable[[list[Instance]], Payload],
                 seed: int = 2024, per_size: int = 64, keys: KeyShare | None = None) -> None:
        rows = instances(model, DISTINCT_ROWS[model], seed) if keys is None else keys.rows(model, seed)
        if keys is not None:  # enough requests that the share drawn is close to the share asked
            per_size = max(per_size, keys.distinct)
        rng = random.Random(seed)
        self.mix = mix
        self.requests = {size: [encode(rng.sample(rows, size) if size <= len(rows)
                                       else rng.choices(rows, k=size)) for _ in range(per_size)]
                         for size in mix.sizes}
        self._rng = rng

    def draw(self) -> tuple[int, Payload]:
        """(rows, encoded request)."""
        (size,) = self._rng.choices(self.mix.sizes, self.mix.weights)
        return size, self._rng.choice(self.requests[size])
