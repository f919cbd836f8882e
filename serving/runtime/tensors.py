"""TensorProto <-> numpy, with TensorFlow's own converters.

``tf.make_tensor_proto`` writes numeric tensors as ``tensor_content`` (one buffer, no
per-element protobuf fields) and strings as ``string_val``, as TF Serving does.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2

from serving.errors import InvalidArgument
from serving.runtime.signature import STRING


def to_numpy(name: str, proto: tensor_pb2.TensorProto) -> np.ndarray:
    try:
        array = tf.make_ndarray(proto)
    except Exception as error:  # noqa: BLE001 - any malformed proto is the client's fault
        raise InvalidArgument(f"Input '{name}' is not a valid TensorProto: {error}") from None
    if array.dtype.kind in "SUa":
        array = array.astype(object)
    return array


def to_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    if array.dtype == STRING:
        return tf.make_tensor_proto(array, dtype=tf.string)
    return tf.make_tensor_proto(array)
