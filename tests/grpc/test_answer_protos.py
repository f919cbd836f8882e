"""Predict answers fill their output protos in place (``to_proto(..., into=...)``): the bytes
must be TensorFlow's own, whichever way ``to_proto`` builds them."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from serving.runtime.tensors import to_proto

ARRAYS = {
    "float32 1x1": np.array([[2.5]], dtype=np.float32),
    "int64 2x3": np.arange(6, dtype=np.int64).reshape(2, 3),
    "bool scalar": np.array(True),
    "bytes 2": np.array([b"a", b"bc"], dtype=object),
    "str 1 (TensorFlow's path)": np.array(["x"], dtype=object),
    "float16 3 (TensorFlow's path)": np.array([1, 2, 3], dtype=np.float16),
}


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_filled_in_place_as_tensorflow_makes_it(name):
    array = ARRAYS[name]
    response = predict_pb2.PredictResponse()
    filled = to_proto(array, into=response.outputs["y"])
    assert filled is response.outputs["y"]
    expected = tf.make_tensor_proto(array, dtype=tf.string if array.dtype == object else None)
    assert response.outputs["y"].SerializeToString() == expected.SerializeToString()
