"""A stored row decodes to what was encoded; anything else is a CorruptEntry, never a
client error. (Every dtype and shape through both stores: test_stores.py.)"""
from __future__ import annotations

import numpy as np
import pytest
from tensorflow_serving.apis import session_service_pb2

from serving.precomputed.api import CorruptEntry, StoreError
from serving.precomputed.codec import decode_row, encode_row
from serving.runtime.tensors import to_proto


def test_output_order_survives():
    names = ["z", "b", "m", "a", "y"]
    decoded = decode_row(encode_row({name: np.float32(i) for i, name in enumerate(names)}))
    assert list(decoded) == names
    assert [float(v) for v in decoded.values()] == [0.0, 1.0, 2.0, 3.0, 4.0]


def twice_named() -> bytes:
    message = session_service_pb2.SessionRunResponse()
    for _ in range(2):
        message.tensor.add(name="x").tensor.CopyFrom(to_proto(np.float32(1)))
    return message.SerializeToString()


def content_mismatch() -> bytes:
    proto = to_proto(np.zeros(3, np.float32))
    proto.tensor_content = proto.tensor_content[:-1]
    message = session_service_pb2.SessionRunResponse()
    message.tensor.add(name="x").tensor.CopyFrom(proto)
    return message.SerializeToString()


@pytest.mark.parametrize("data", [b"\xff\xff\xff", twice_named(), content_mismatch()],
                         ids=["not-protobuf", "one-output-twice", "content-does-not-match-shape"])
def test_what_does_not_decode_is_a_corrupt_entry(data):
    with pytest.raises(CorruptEntry) as caught:
        decode_row(data)
    assert isinstance(caught.value, StoreError)  # readers fall back on any StoreError
