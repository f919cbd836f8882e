"""A minimal TensorFlow runtime for Seldon MLServer: the peer ``bench_v2`` measures the gateway's
Open Inference Protocol against (issue 24). MLServer ships no TensorFlow runtime; this is the
few lines a user would write: load the SavedModel's serving signature, call it with the
request's tensors, answer every output.

It runs inside MLServer's own venv (``build/mlserver-venv``: mlserver and tensorflow, nothing of
ours), never in the gateway's: MLServer imports it by the ``implementation`` name in a
``model-settings.json`` (``loadtests.baselines.mlserver_tf.SavedModelRuntime``, with this
checkout on ``PYTHONPATH``) whose ``parameters.uri`` is the SavedModel's version folder.
Adaptive batching is MLServer's own (``max_batch_size`` / ``max_batch_time`` in the same file).
"""
from __future__ import annotations

import tensorflow as tf
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput
from mlserver.utils import get_model_uri


def _tensor(given: RequestInput) -> tf.Tensor:
    """The input as a tensor. BYTES not through NumpyCodec: it reads gRPC's ``bytes_contents``
    as fixed-width buffers of ``shape[-1]`` bytes each (JSON text it takes as strings)."""
    if given.datatype != "BYTES":
        return tf.constant(NumpyCodec.decode_input(given))
    data = getattr(given.data, "root", given.data)
    return tf.constant([d.encode() if isinstance(d, str) else d for d in data], shape=given.shape)


class SavedModelRuntime(MLModel):
    async def load(self) -> bool:
        self._signature = tf.saved_model.load(await get_model_uri(self._settings)).signatures["serving_default"]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        tensors = {i.name: _tensor(i) for i in payload.inputs}
        outputs = self._signature(**tensors)
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=[
            NumpyCodec.encode_output(name, tensor.numpy()) for name, tensor in sorted(outputs.items())])
