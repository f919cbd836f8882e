"""TF Serving's REST API for the input types JSON does not convert to, on a real gateway: the
model is ``tests/v2/test_grpc.py``'s ``dtypes_model`` (``from_half`` h half, ``from_bf16`` bf
bfloat16, ``narrow`` i8 int8, u16 uint16, b bool). TF Serving 2.21's answers, read from its
source: ``util/json_tensor.cc`` (AddValueToTensor's default case, FillTensorMapFromInputsMap
returning it as it is, FillTensorMapFromInstancesList wrapping it with ``status.ToString()``)
and ``model_servers/http_server.cc`` (ToHTTPStatusCode: UNIMPLEMENTED -> 501 NOT_IMP)."""
from __future__ import annotations

import httpx
import pytest

from tests.conftest import Gateway
from tests.v2.test_grpc import dtypes_model  # noqa: F401 - the fixture, shared
from tests.v2.test_rest_dtypes import gateway  # noqa: F401 - the fixture: a gateway serving it as "dtypes"


def predict(server: Gateway, body: dict) -> tuple[int, dict]:
    answer = httpx.post(server.url + "/v1/models/dtypes:predict", json=body, timeout=60)
    return answer.status_code, answer.json()


@pytest.mark.parametrize("signature, inputs, status, error", [
    ("from_half", {"inputs": [1.5, 2.0]}, 501, "Conversion of JSON Value: 1.5 to type: half"),
    ("from_half", {"inputs": {"h": [[2], [3]]}}, 501, "Conversion of JSON Value: 2 to type: half"),
    ("from_bf16", {"inputs": ["x"]}, 501, 'Conversion of JSON Value: "x" to type: bfloat16'),
    ("narrow", {"inputs": {"i8": [1], "u16": [2], "b": [True]}}, 501, "Conversion of JSON Value: 2 to type: uint16"),
    ("from_half", {"instances": [1.5, 2.0]}, 400,
     "Failed to process element: 0 of 'instances' list. Error: UNIMPLEMENTED: Conversion of JSON Value: 1.5 to "
     "type: half"),
    ("from_bf16", {"instances": [{"bf": 0.5}]}, 400,
     "Failed to process element: 0 key: bf of 'instances' list. Error: UNIMPLEMENTED: Conversion of JSON Value: "
     "0.5 to type: bfloat16"),
    ("narrow", {"instances": [{"i8": 1, "u16": 2, "b": True}]}, 400,
     "Failed to process element: 0 key: u16 of 'instances' list. Error: UNIMPLEMENTED: Conversion of JSON Value: 2 "
     "to type: uint16"),
    # int8: beyond rapidjson's IsInt, TF Serving's type error; within it, where TF Serving would
    # wrap 300 around to 44, refused with the range
    ("narrow", {"inputs": {"i8": [2147483648], "u16": [], "b": []}}, 400,
     "Failed to process input: i8 of 'inputs' object. Error: JSON Value: 2147483648 Type: Number is not of "
     "expected type: int8"),
    ("narrow", {"instances": [{"i8": 300, "u16": 2, "b": True}]}, 400,
     "Failed to process element: 0 key: i8 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: 300 Type: "
     "Number is not of expected type: int8 (out of range [-128, 127])"),
], ids=["half-columnar", "half-columnar-named", "bfloat16-string", "uint16-columnar", "half-rows",
        "bfloat16-named-rows", "uint16-rows", "int8-beyond-int32", "int8-would-wrap"])
def test_a_value_for_a_type_json_does_not_convert_to(gateway, signature, inputs, status, error):  # noqa: F811
    assert predict(gateway, {"signature_name": signature, **inputs}) == (status, {"error": error})

