"""The datatypes the example models lack, over v2 REST (tritonclient.http), JSON and binary:
FP16 and BF16 outputs (BF16 in JSON as float32 numbers; tritonclient reads binary BF16 as
float32), FP16 inputs, FP16 and BF16 inputs as JSON numbers (plain HTTP), INT8/UINT16/BOOL
inputs and BOOL outputs. The model is ``tests/v2/test_grpc.py``'s ``dtypes_model``."""
from __future__ import annotations

import httpx
import ml_dtypes
import numpy as np
import pytest
import tritonclient.http as triton

from serving.settings import ModelConfig, Settings
from tests.conftest import Gateway, free_port
from tests.v2.test_grpc import dtypes_model  # noqa: F401 - the fixture, shared
from tests.v2.test_rest import client  # noqa: F401 - the fixture, on this module's gateway


@pytest.fixture(scope="module")
def gateway(dtypes_model):  # noqa: F811 - the imported fixture
    settings = Settings(port=0, rest_api_port=free_port(),
                        models=(ModelConfig(name="dtypes", base_path=str(dtypes_model)),))
    with Gateway(settings) as gateway:
        yield gateway


def tensor(name: str, array: np.ndarray, datatype: str, binary: bool) -> triton.InferInput:
    item = triton.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array, binary_data=binary)
    return item


def outputs(binary: bool, *names: str) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(name, binary_data=binary) for name in names]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_half_and_bfloat16_outputs(client, binary):  # noqa: F811
    x = np.array([0.5, 3.140625, -2.0, 65504.0], np.float32)
    result = client.infer("dtypes", [tensor("x", x, "FP32", binary)], outputs=outputs(binary, "half", "bf", "y"))
    np.testing.assert_array_equal(result.as_numpy("half").astype(np.float32), x.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(result.as_numpy("bf").astype(np.float32),
                                  x.astype(ml_dtypes.bfloat16).astype(np.float32))
    np.testing.assert_array_equal(result.as_numpy("y"), x)
    datatypes = {o["name"]: o["datatype"] for o in result.get_response()["outputs"]}
    assert datatypes == {"half": "FP16", "bf": "BF16", "y": "FP32"}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_half_input(client, binary):  # noqa: F811
    h = np.array([0.5, 3.0, -1.25], np.float16)
    result = client.infer("dtypes", [tensor("h", h, "FP16", binary)], outputs=outputs(binary, "y"),
                          parameters={"signature_name": "from_half"})
    np.testing.assert_array_equal(result.as_numpy("y"), h.astype(np.float32) * 2)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_narrow_integers_and_booleans(client, binary):  # noqa: F811
    i8 = np.array([-128, 0, 127], np.int8)
    u16 = np.array([0, 65535, 1], np.uint16)
    b = np.array([True, False, True])
    result = client.infer("dtypes", [tensor("i8", i8, "INT8", binary), tensor("u16", u16, "UINT16", binary),
                                     tensor("b", b, "BOOL", binary)],
                          outputs=outputs(binary, "sum", "flipped"), parameters={"signature_name": "narrow"})
    assert result.as_numpy("sum").tolist() == [-128, 65535, 128]
    assert result.as_numpy("flipped").tolist() == [False, True, False]


def infer_json(gateway, signature: str, name: str, datatype: str, data: list) -> httpx.Response:
    """One JSON input, ``data`` as JSON numbers, to ``signature`` of the dtypes model."""
    body = {"parameters": {"signature_name": signature},
            "inputs": [{"name": name, "datatype": datatype, "shape": [len(data)], "data": data}]}
    return httpx.post(gateway.url + "/v2/models/dtypes/infer", json=body, timeout=30)


@pytest.mark.parametrize(("signature", "name", "datatype", "data", "doubled"), [
    # bfloat16 keeps 8 significant bits: 1 + 2**-8 is a tie (to even: 1.0), 0.1 -> 0.10009765625,
    # -1e30 -> -1.0002555517425873e30 (float32's exponent range)
    ("from_bf16", "bf", "BF16", [0.5, 3.140625, -2.0, 1.00390625, 0.1, 300, -1e30],
     [1.0, 6.28125, -4.0, 2.0, 0.2001953125, 600.0, -2.0005111034851745e30]),
    # half keeps 11: 0.1 -> 0.0999755859375; 65504 is its largest; 2047 its largest exact integer,
    # 2049 a tie (to even: 2048)
    ("from_half", "h", "FP16", [0.5, 3.0, -1.25, 0.1, 65504.0, 2047, 2049],
     [1.0, 6.0, -2.5, 0.199951171875, 131008.0, 4094.0, 4096.0]),
], ids=["BF16", "FP16"])
def test_16_bit_float_inputs_as_json_numbers(gateway, signature, name, datatype, data, doubled):
    """The signature takes the input in its own dtype (no cast on the way) and doubles it in
    float32, so y tells the values the JSON numbers decoded to."""
    answer = infer_json(gateway, signature, name, datatype, data)
    assert answer.status_code == 200, answer.text
    (y,) = answer.json()["outputs"]
    assert (y["name"], y["datatype"], y["shape"]) == ("y", "FP32", [len(data)])
    np.testing.assert_array_equal(np.array(y["data"], np.float32), np.array(doubled, np.float32))


@pytest.mark.parametrize(("signature", "name", "datatype", "data", "error"), [
    ("serving_default", "x", "BF16", [1.0], "Input 'x' has datatype BF16; the model expects FP32"),
    ("serving_default", "x", "FP16", [1.0], "Input 'x' has datatype FP16; the model expects FP32"),
    ("from_bf16", "bf", "FP16", [1.0], "Input 'bf' has datatype FP16; the model expects BF16"),
    ("from_bf16", "bf", "FP32", [1.0], "Input 'bf' has datatype FP32; the model expects BF16"),
    ("from_half", "h", "BF16", [1.0], "Input 'h' has datatype BF16; the model expects FP16"),
    ("from_half", "h", "FP16", [65520.0], "Failed to process input: h of 'inputs' object. Error: Cannot convert "
                                          "JSON value: 65520.0 to half without loss of precision."),
    ("from_half", "h", "FP16", ["1"], "Failed to process input: h of 'inputs' object. Error: JSON Value: \"1\" "
                                      "Type: String is not of expected type: DT_HALF"),
    # bfloat16's largest is 3.3895314e38: a float32 beyond it would round to infinity
    ("from_bf16", "bf", "BF16", [1.0, -3.4e38], "Failed to process input: bf of 'inputs' object. Error: Cannot "
                                                "convert JSON value: -3.4e+38 to bfloat16 without loss of precision."),
    ("from_bf16", "bf", "BF16", [1e39], "Failed to process input: bf of 'inputs' object. Error: Cannot "
                                        "convert JSON value: 1e+39 to bfloat16 without loss of precision."),
    ("from_bf16", "bf", "BF16", ["1"], "Failed to process input: bf of 'inputs' object. Error: JSON Value: \"1\" "
                                       "Type: String is not of expected type: DT_BFLOAT16"),
], ids=["bf16-to-fp32", "fp16-to-fp32", "fp16-to-bf16", "fp32-to-bf16", "bf16-to-fp16", "half-overflow",
        "half-string", "bfloat16-overflow", "bfloat16-float32-overflow", "bfloat16-string"])
def test_16_bit_float_inputs_refused_with_400(gateway, signature, name, datatype, data, error):
    answer = infer_json(gateway, signature, name, datatype, data)
    assert (answer.status_code, answer.json()) == (400, {"error": error})
