"""The v2 types against TensorFlow itself: a real SavedModel with one input per v2 datatype
(each passed through to an output), an input of unknown rank, a complex output and one of
fixed shape, loaded by the gateway's own loader (``serving.runtime.savedmodel``).

Each datatype is the dtype and name TensorFlow gives the signature; binary inputs as
tritonclient serializes them decode to arrays the model takes, and what it answers encodes
back to the very same bytes; and the model's v2 metadata says what the signature says."""
from __future__ import annotations

from dataclasses import asdict

import ml_dtypes
import numpy as np
import pytest
from google.protobuf import json_format
from tritonclient.utils import serialize_byte_tensor

from serving.runtime import savedmodel
from serving.v2 import datatypes, protos, raw, request
from serving.v2.datatypes import BYTES, DATATYPES
from serving.v2.metadata import ModelMetadata, TensorMetadata, model_metadata


@pytest.fixture(scope="module")
def typed_model(tmp_path_factory) -> savedmodel.LoadedModel:
    import tensorflow as tf

    specs = {dt.name.lower(): tf.TensorSpec([None, 2], tf.string if dt is BYTES else tf.as_dtype(dt.dtype),
                                            name=dt.name.lower()) for dt in DATATYPES}
    specs["any_rank"] = tf.TensorSpec(None, tf.float32, name="any_rank")

    class Typed(tf.Module):
        @tf.function(input_signature=list(specs.values()))
        def serve(self, *args):
            named = dict(zip(specs, args))
            answer = {f"{name}_out": tf.identity(value) for name, value in named.items()}
            answer["complex"] = tf.complex(named["fp32"], named["fp32"])
            answer["fixed"] = tf.zeros([3, 4], tf.float32)
            return answer

    module = Typed()
    path = tmp_path_factory.mktemp("typed") / "1"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return savedmodel.load(path)


@pytest.mark.parametrize("dt", DATATYPES, ids=lambda dt: dt.name)
def test_each_datatype_is_the_dtype_tensorflow_gives_the_signature(typed_model, dt):
    spec = typed_model.specs["serving_default"]
    for tensor in (spec.inputs[dt.name.lower()], spec.outputs[f"{dt.name.lower()}_out"]):
        assert (tensor.dtype, tensor.dtype_name) == (dt.dtype, dt.dt_name)
        assert datatypes.for_spec(tensor) is dt
    assert datatypes.check(dt.name, spec.inputs[dt.name.lower()]) is dt


def _client_array(dt) -> np.ndarray:
    if dt is BYTES:
        return np.array([[b"", b"\xff\xfe not UTF-8"], [b"\x00", "é".encode()], [b"x" * 300, b"ok"]], object)
    if dt.dtype.kind == "b":
        return np.array([[True, False], [False, True], [True, True]])
    if dt.dtype.kind in "iu":
        info = np.iinfo(dt.dtype)
        return np.array([[info.min, info.max], [0, 1], [2, info.max - 1]], dt.dtype)
    finfo = ml_dtypes.finfo(dt.dtype)
    return np.array([[-0.0, np.inf], [np.nan, float(finfo.smallest_subnormal)], [-2.5, float(finfo.max)]], dt.dtype)


def test_tritonclients_binary_inputs_through_the_model_come_back_as_the_same_bytes(typed_model):
    spec = typed_model.specs["serving_default"]
    sent = {}
    inputs = {}
    for dt in DATATYPES:
        array = _client_array(dt)
        sent[dt.name] = serialize_byte_tensor(array).item() if dt is BYTES else array.tobytes()
        inputs[dt.name.lower()] = raw.decode(sent[dt.name], datatypes.check(dt.name, spec.inputs[dt.name.lower()]),
                                             [3, 2], dt.name.lower())
    inputs["any_rank"] = raw.decode(np.ones((3, 1, 2), np.float32).tobytes(), datatypes.BY_NAME["FP32"], [3, 1, 2],
                                    "any_rank")
    assert spec.validate(inputs) == 3  # what the service checks: names, dtypes, shapes; 3 rows
    answer = typed_model.run("serving_default", inputs)
    wanted = [request.Wanted(f"{dt.name.lower()}_out") for dt in DATATYPES]
    for output in request.select_outputs(spec, wanted, "typed"):
        assert raw.encode(answer[output.name], output.datatype) == sent[output.datatype.name], output.name


def test_the_models_metadata(typed_model):
    meta = model_metadata("typed", [10, 2, 1], typed_model.specs["serving_default"])
    assert (meta.name, meta.versions, meta.platform) == ("typed", ["1", "2", "10"], "tensorflow_savedmodel")
    assert meta.inputs == sorted([TensorMetadata(dt.name.lower(), dt.name, [-1, 2]) for dt in DATATYPES]
                                 + [TensorMetadata("any_rank", "FP32", [-1])], key=lambda t: t.name)
    outputs = {t.name: t for t in meta.outputs}
    assert [t.name for t in meta.outputs] == sorted(outputs)
    assert outputs["complex"] == TensorMetadata("complex", "COMPLEX64", [-1, 2])  # not v2's, but said
    assert outputs["fixed"] == TensorMetadata("fixed", "FP32", [3, 4])
    assert outputs["bf16_out"] == TensorMetadata("bf16_out", "BF16", [-1, 2])


def test_the_metadata_dataclasses_are_the_protos_messages(typed_model):
    """Their field names and types are ModelMetadataResponse's: the gRPC adapter and REST's
    JSON are the same data."""
    meta = model_metadata("typed", [1], typed_model.specs["serving_default"])
    message = json_format.ParseDict(asdict(meta), protos.ModelMetadataResponse())
    assert message.inputs[0].shape == [-1] and message.platform == "tensorflow_savedmodel"
    back = json_format.MessageToDict(message, preserving_proto_field_name=True)
    for tensors in (back["inputs"], back["outputs"]):
        for tensor in tensors:
            tensor["shape"] = [int(size) for size in tensor["shape"]]  # int64 is a JSON string in proto3 JSON
    assert ModelMetadata(**{**back, "inputs": [TensorMetadata(**t) for t in back["inputs"]],
                            "outputs": [TensorMetadata(**t) for t in back["outputs"]]}) == meta
