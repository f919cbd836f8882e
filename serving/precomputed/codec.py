"""One row's outputs <-> the bytes a store holds, exact in dtype, shape and output order.

The format is TensorFlow Serving's own: a serialized ``SessionRunResponse``, whose
``tensor`` list holds one ``NamedTensorProto`` per output, built and read by the gateway's
tensor helpers (``serving.runtime.tensors``), so a stored row decodes to exactly the arrays
the model answered with. Not ``PredictResponse``: its ``outputs`` is a protobuf map, whose
order does not survive a round trip, and the order of outputs shows in a REST answer. Not
``.npy``/``.npz``: they cannot hold DT_STRING tensors (object arrays) without pickle, which
must never be loaded from a store others can write to.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import named_tensor_pb2
from tensorflow_serving.apis import session_service_pb2

from serving.errors import InvalidArgument
from serving.precomputed.api import CorruptEntry
from serving.runtime.tensors import protos_to_numpy, to_proto


def encode_row(outputs: Mapping[str, np.ndarray]) -> bytes:
    """One row's outputs (name -> that row's array, any dtype and shape), as stored."""
    message = session_service_pb2.SessionRunResponse(tensor=[
        named_tensor_pb2.NamedTensorProto(name=name, tensor=to_proto(np.asarray(value)))
        for name, value in outputs.items()])
    return message.SerializeToString()


def decode_row(data: bytes) -> dict[str, np.ndarray]:
    """What ``encode_row`` was given, in its order; ``CorruptEntry`` if ``data`` is not
    such a row (so a reader falls back to the model instead of failing the request)."""
    try:
        message = session_service_pb2.SessionRunResponse.FromString(data)
        protos = {named.name: named.tensor for named in message.tensor}
        if len(protos) != len(message.tensor):
            raise CorruptEntry("A stored row names one output twice")
        return protos_to_numpy(protos, role="Output")
    except (DecodeError, InvalidArgument) as err:
        raise CorruptEntry(f"A stored row does not decode: {err}") from None
