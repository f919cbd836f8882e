"""Loading a SavedModel and running its signatures on numpy: the one TensorFlow module.

Models load with ``tf.saved_model.load`` (TF1 SavedModels such as TF Serving's test
models, TF2 ``tf.saved_model.save`` and Keras 3 ``model.export`` alike; Keras'
``load_model`` refuses SavedModel directories under Keras 3). Signature metadata comes
from the SavedModel proto itself, so metadata answers match TF Serving's byte for byte.
TensorFlow errors are translated into ``serving.errors`` here, at the boundary.
A version on ``gs://`` or ``s3://`` is copied to a local directory first
(``serving.runtime.storage``) and loaded from there; the copy goes when the model does.
"""
from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.errors import InvalidArgument, ServingError
from serving.runtime import storage
from serving.runtime.signature import STRING, SignatureSpec, TensorSpec, find_signature

SERVE_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"
INIT_OP_KEY = "__saved_model_init_op"  # a pseudo-signature TF2 writes; not callable


Runner = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class LoadedModel:
    """A loaded SavedModel: its signatures as specs, protos and callables. ``path`` is the
    local directory it was loaded from (a copy, for a remote ``source``)."""

    path: str
    specs: dict[str, SignatureSpec]
    signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]
    _runners: Mapping[str, Runner]
    _keepalive: Any  # the loaded object or session that owns the variables
    source: str = ""  # where the version lives (gs://, s3://, or ``path`` itself)

    def signature(self, name: str) -> SignatureSpec:
        return find_signature(self.specs, name)

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray],
            deadline: float | None = None) -> dict[str, np.ndarray]:
        """Run one signature on numpy inputs (called from executor threads).

        ``deadline`` is accepted for the ``Model`` protocol; a running TensorFlow call
        cannot be interrupted, so expired requests are dropped before they run instead.
        """
        runner = self._runners.get(signature_name)
        if runner is None:
            find_signature(self.specs, signature_name)  # raises TF Serving's error for it
        try:
            return runner(inputs)
        except tf.errors.InvalidArgumentError as error:
            raise InvalidArgument(error.message) from None
        except (TypeError, ValueError) as error:
            raise InvalidArgument(str(error)) from None
        except tf.errors.OpError as error:
            raise ServingError(f"Model execution failed: {error.message}") from None


def load(path: str | os.PathLike) -> LoadedModel:
    """Load the SavedModel in ``path`` (one version directory).

    TF2 SavedModels (``tf.saved_model.save``, Keras 3 export) run through their restored
    signature functions. TF1 SavedModels run in a graph Session, as TF Serving runs them:
    TF2's loader cannot restore some of them (TF Serving's half_plus_three among them)
    and would check feed shapes that TF Serving does not.
    """
    source = os.fspath(path)
    local = storage.local_copy(source)
    try:
        model = _load_local(local)
    except BaseException:
        storage.remove_copy(local, source)
        raise
    model.source = source
    if local != source:  # the local copy lives as long as the model: removed once it is dropped
        weakref.finalize(model, storage.remove_copy, local, source)
    return model


def _load_local(path: str) -> LoadedModel:
    meta_graph = _serving_meta_graph(path)
    defs = dict(meta_graph.signature_def)  # all of them, for metadata (as TF Serving answers)
    callable_defs = {name: d for name, d in defs.items() if name != INIT_OP_KEY}
    specs = {name: spec_from_signature_def(name, d) for name, d in callable_defs.items()}
    if meta_graph.object_graph_def.nodes:
        root = tf.saved_model.load(path, tags=[SERVE_TAG])
        runners = {name: _function_runner(fn) for name, fn in root.signatures.items()}
        keepalive: Any = root
    else:
        keepalive, runners = _session_runners(path, callable_defs)
    return LoadedModel(path, specs, defs, runners, keepalive)


def _function_runner(function: Any) -> Runner:
    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = function(**{name: tf.constant(value) for name, value in inputs.items()})
        return {name: value.numpy() for name, value in outputs.items()}

    return run


def _session_runners(path: str, defs: Mapping[str, meta_graph_pb2.SignatureDef]) -> tuple[Any, dict[str, Runner]]:
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        tf.compat.v1.saved_model.loader.load(session, [SERVE_TAG], path)
    return session, {name: _session_runner(session, d) for name, d in defs.items()}


def _session_runner(session: Any, signature_def: meta_graph_pb2.SignatureDef) -> Runner:
    input_keys = sorted(signature_def.inputs)
    output_keys = sorted(signature_def.outputs)
    tensor = session.graph.get_tensor_by_name
    feeds = [tensor(signature_def.inputs[k].name)._as_tf_output() for k in input_keys]
    fetches = [tensor(signature_def.outputs[k].name)._as_tf_output() for k in output_keys]

    expected = frozenset(input_keys)

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Callers that skip SignatureSpec.validate (warm-up records) still get a clear error.
        if inputs.keys() != expected:
            raise InvalidArgument(f"Signature inputs are {sorted(expected)}; got {sorted(inputs)}")
        # The C session call, as TF Serving's Session::Run: Session.run() and its callables
        # add a Python-only check of feed shapes that TF Serving does not make (half_plus_two
        # is fed [3] for a declared [-1, 1] in TF Serving's own tests).
        feed = {f: inputs[k] for f, k in zip(feeds, input_keys)}
        values = session._call_tf_sessionrun(None, feed, fetches, [], None)
        return dict(zip(output_keys, values))

    return run


def _serving_meta_graph(path: str) -> meta_graph_pb2.MetaGraphDef:
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(storage.read_bytes(os.path.join(path, "saved_model.pb")))
    for meta_graph in proto.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return meta_graph
    raise ServingError(f"No MetaGraphDef tagged '{SERVE_TAG}' in {path}")


def spec_from_signature_def(name: str, signature_def: meta_graph_pb2.SignatureDef) -> SignatureSpec:
    inputs = {key: _tensor_spec(key, info) for key, info in signature_def.inputs.items()}
    outputs = {key: _tensor_spec(key, info) for key, info in signature_def.outputs.items()}
    return SignatureSpec(name, signature_def.method_name, inputs, outputs, tuple(sorted(inputs)))


def _tensor_spec(name: str, info: meta_graph_pb2.TensorInfo) -> TensorSpec:
    dtype = tf.dtypes.as_dtype(info.dtype)
    np_dtype = STRING if dtype == tf.string else np.dtype(dtype.as_numpy_dtype)
    shape = info.tensor_shape
    known = info.HasField("tensor_shape") and not shape.unknown_rank
    dims = tuple(None if d.size < 0 else d.size for d in shape.dim) if known else None
    return TensorSpec(name, np_dtype, dims, types_pb2.DataType.Name(info.dtype))
