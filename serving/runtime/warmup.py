"""Warm-up requests run on a model version before it serves.

TF Serving's own format comes first: ``assets.extra/tf_serving_warmup_requests``, a
TFRecord file of ``PredictionLog`` protos. Without it, a synthetic request per allowed
batch size primes each predict signature (a synthetic input may be meaningless to the
model, e.g. empty JPEG bytes, so its failure is only logged).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving.runtime import live
from serving.runtime.choice import Evidence, RunnerChoice
from serving.runtime.savedmodel import DEFAULT_SIGNATURE, LoadedModel
from serving.runtime.signature import PREDICT, STRING

log = logging.getLogger(__name__)

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


class WarmupRequest(NamedTuple):
    signature_name: str
    inputs: dict[str, np.ndarray]


def recorded_requests(model: LoadedModel) -> list[WarmupRequest] | None:
    """The model's own warm-up requests, or None if it ships none."""
    path = os.path.join(model.path, WARMUP_FILE)
    if not os.path.exists(path):
        return None
    requests = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        entry = prediction_log_pb2.PredictionLog.FromString(record)
        requests.append(_from_log(model, entry))
    return requests


def synthetic_requests(model: LoadedModel, batch_sizes: Iterable[int]) -> list[WarmupRequest]:
    """A request of each batch size for each batchable predict signature: floats drawn
    from [0.5, 1.5) (so that they reach the weights they multiply, which zeros would not:
    ``LoadedModel.prefer_session`` compares answers on them), other numbers 0 (a valid
    index), strings empty."""
    random = np.random.default_rng(0)
    requests = []
    for name, spec in model.specs.items():
        if spec.method_name != PREDICT or not spec.batchable:
            continue
        for rows in batch_sizes:
            inputs = {}
            for key, tensor in spec.inputs.items():
                shape = (rows, *(() if tensor.shape is None else tuple(d or 1 for d in tensor.shape[1:])))
                if tensor.dtype.kind == "f":
                    value = random.uniform(0.5, 1.5, shape).astype(tensor.dtype)
                else:
                    value = np.zeros(shape, dtype=tensor.dtype)
                    if tensor.dtype == STRING:
                        value[...] = b""
                inputs[key] = value
            requests.append(WarmupRequest(name, inputs))
    return requests


def requests_for(model: LoadedModel, batch_sizes: Iterable[int]) -> tuple[list[WarmupRequest], Evidence]:
    """The model's warm-up requests and where they come from: its recorded file
    (``Evidence.WARMUP_FILE``), else synthetic ones (``Evidence.SYNTHETIC``)."""
    recorded = recorded_requests(model)
    if recorded is not None:
        return recorded, Evidence.WARMUP_FILE
    return synthetic_requests(model, batch_sizes), Evidence.SYNTHETIC


def run(model: LoadedModel, batch_sizes: Iterable[int], prefer_session: bool = True, live_calls: int = 0,
        on_settled: Callable[[RunnerChoice], None] = lambda choice: None) -> int:
    """Warm ``model`` up; return the number of requests run. Recorded failures raise.

    With ``prefer_session``, the warm-up also chooses the runner of a TF2 model
    (``LoadedModel.prefer_session``), except where it is synthetic and ``live_calls`` is
    set: then the model's first ``live_calls`` calls after the warm-up decide in the
    background (``serving.runtime.live``), and ``on_settled`` gets the choice.
    """
    requests, evidence = requests_for(model, batch_sizes)
    on_live_calls = prefer_session and evidence is Evidence.SYNTHETIC and live_calls > 0
    if prefer_session and not on_live_calls:
        model.prefer_session(requests, evidence)
    if evidence is Evidence.WARMUP_FILE:
        for request in requests:
            model.run(request.signature_name, request.inputs)
        return len(requests)
    count = 0
    for request in requests:
        try:
            model.run(request.signature_name, request.inputs)
            count += 1
        except Exception as error:  # noqa: BLE001 - a synthetic input may not suit the model
            log.info("synthetic warm-up of %s:%s skipped: %s", model.path,
                     request.signature_name, error)
    if on_live_calls:  # only now: the warm-up's own calls are not live ones
        live.watch(model, live_calls, requests, on_settled)
    return count


def _from_log(model: LoadedModel, entry: prediction_log_pb2.PredictionLog) -> WarmupRequest:
    kind = entry.WhichOneof("log_type")
    if kind == "predict_log":
        request = entry.predict_log.request
        inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        return WarmupRequest(request.model_spec.signature_name or DEFAULT_SIGNATURE, inputs)
    if kind in ("classify_log", "regress_log"):
        request = getattr(entry, kind).request
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        examples = [e.SerializeToString() for e in request.input.example_list.examples]
        key = next(iter(model.signature(name).inputs))
        return WarmupRequest(name, {key: np.array(examples, dtype=object)})
    raise ValueError(f"unsupported warm-up record type: {kind}")
