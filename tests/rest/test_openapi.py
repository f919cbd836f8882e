"""``/openapi.json`` and ``/docs`` describe TF Serving's REST API: a valid OpenAPI document
(checked by an OpenAPI validator) whose models the gateway's real answers fit; off with
``--rest_api_docs=false``."""
from __future__ import annotations

import httpx
import pytest
from openapi_spec_validator import validate

from serving.rest import openapi
from serving.settings import ModelConfig, Settings
from tests.conftest import Gateway, free_port


@pytest.fixture(scope="module")
def gateways(tfserving_dir):
    models = (ModelConfig(name="default", base_path=str(tfserving_dir / "saved_model_half_plus_two_cpu")),)
    with Gateway(Settings(port=0, rest_api_port=free_port(), models=models)) as on, \
         Gateway(Settings(port=0, rest_api_port=free_port(), models=models, rest_api_docs=False)) as off:
        yield on, off


def test_the_schema_is_valid_openapi_for_tf_servings_routes(gateways):
    on, _ = gateways
    doc = httpx.get(on.url + "/openapi.json", timeout=30).json()
    validate(doc)
    paths = set(doc["paths"])
    for target in ("/v1/models/{model_name}", "/v1/models/{model_name}/versions/{version}",
                   "/v1/models/{model_name}/labels/{label}"):
        assert {f"{target}:predict", f"{target}:classify", f"{target}:regress", f"{target}/metadata"} <= paths
    predict = doc["paths"]["/v1/models/{model_name}:predict"]["post"]
    assert predict["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PredictRequest"}
    assert {"200", "400", "404", "413", "429", "503", "504"} <= set(predict["responses"])
    assert set(doc["components"]["schemas"]["PredictRequest"]["properties"]) == {
        "signature_name", "instances", "inputs"}
    assert "text/html" in httpx.get(on.url + "/docs", timeout=30).headers["content-type"]


def test_real_answers_fit_the_documented_models(gateways):
    on, _ = gateways
    with httpx.Client(base_url=on.url, timeout=30) as client:
        openapi.PredictResponse.model_validate(client.post("/v1/models/default:predict",
                                                           json={"instances": [1.0, 2.0]}).json())
        openapi.PredictResponse.model_validate(client.post("/v1/models/default:predict",
                                                           json={"inputs": [1.0]}).json())
        openapi.ClassifyResponse.model_validate(client.post("/v1/models/default:classify", json={
            "signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]}).json())
        openapi.RegressResponse.model_validate(client.post("/v1/models/default:regress", json={
            "signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]}).json())
        openapi.ModelStatus.model_validate(client.get("/v1/models/default").json())
        openapi.ModelMetadata.model_validate(client.get("/v1/models/default/metadata").json())
        openapi.Error.model_validate(client.post("/v1/models/nope:predict", json={"instances": [1]}).json())


def test_docs_can_be_switched_off(gateways):
    _, off = gateways
    for path in ("/openapi.json", "/docs"):
        assert httpx.get(off.url + path, timeout=30).status_code == 404
