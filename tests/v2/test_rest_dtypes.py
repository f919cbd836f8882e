"""The datatypes the example models lack, over v2 REST (tritonclient.http), JSON and binary:
FP16 and BF16 outputs (BF16 in JSON as float32 numbers; tritonclient reads binary BF16 as
float32), FP16 inputs, INT8/UINT16/BOOL inputs and BOOL outputs. The model is
``tests/v2/test_grpc.py``'s ``dtypes_model``."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import tritonclient.http as triton

from serving.settings import ModelConfig, Settings
from tests.conftest import Gateway, free_port
from tests.v2.test_grpc import dtypes_model  # noqa: F401 - the fixture, shared


@pytest.fixture(scope="module")
def client(dtypes_model):  # noqa: F811 - the imported fixture
    settings = Settings(port=0, rest_api_port=free_port(),
                        models=(ModelConfig(name="dtypes", base_path=str(dtypes_model)),))
    with Gateway(settings) as gateway:
        client = triton.InferenceServerClient(gateway.url.removeprefix("http://"))
        yield client
        client.close()


def tensor(name: str, array: np.ndarray, datatype: str, binary: bool) -> triton.InferInput:
    item = triton.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array, binary_data=binary)
    return item


def outputs(binary: bool, *names: str) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(name, binary_data=binary) for name in names]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_half_and_bfloat16_outputs(client, binary):
    x = np.array([0.5, 3.140625, -2.0, 65504.0], np.float32)
    result = client.infer("dtypes", [tensor("x", x, "FP32", binary)], outputs=outputs(binary, "half", "bf", "y"))
    np.testing.assert_array_equal(result.as_numpy("half").astype(np.float32), x.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(result.as_numpy("bf").astype(np.float32),
                                  x.astype(ml_dtypes.bfloat16).astype(np.float32))
    np.testing.assert_array_equal(result.as_numpy("y"), x)
    datatypes = {o["name"]: o["datatype"] for o in result.get_response()["outputs"]}
    assert datatypes == {"half": "FP16", "bf": "BF16", "y": "FP32"}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_half_input(client, binary):
    h = np.array([0.5, 3.0, -1.25], np.float16)
    result = client.infer("dtypes", [tensor("h", h, "FP16", binary)], outputs=outputs(binary, "y"),
                          parameters={"signature_name": "from_half"})
    np.testing.assert_array_equal(result.as_numpy("y"), h.astype(np.float32) * 2)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_narrow_integers_and_booleans(client, binary):
    i8 = np.array([-128, 0, 127], np.int8)
    u16 = np.array([0, 65535, 1], np.uint16)
    b = np.array([True, False, True])
    result = client.infer("dtypes", [tensor("i8", i8, "INT8", binary), tensor("u16", u16, "UINT16", binary),
                                     tensor("b", b, "BOOL", binary)],
                          outputs=outputs(binary, "sum", "flipped"), parameters={"signature_name": "narrow"})
    assert result.as_numpy("sum").tolist() == [-128, 65535, 128]
    assert result.as_numpy("flipped").tolist() == [False, True, False]
