"""CORS as TF Serving's ``--rest_api_enable_cors_support`` (its http_server.cc): headers on
every /v1/ answer with the flag, preflight OPTIONS answered with or without it."""
from __future__ import annotations

import httpx
import pytest

from serving.settings import ModelConfig, Settings
from tests.conftest import Gateway, free_port

CORS = {
    "access-control-allow-origin": "*",
    "access-control-allow-methods": "POST, GET",
    "access-control-allow-headers": "Content-Type, X-Request-Timeout-Ms",
}


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name.startswith("access-control-")}


@pytest.fixture(scope="module")
def gateways(tfserving_dir):
    """(with the flag, without it), each serving TF Serving's half_plus_two as 'default'."""
    models = (ModelConfig(name="default", base_path=str(tfserving_dir / "saved_model_half_plus_two_cpu")),)
    with Gateway(Settings(port=0, rest_api_port=free_port(), models=models,
                          rest_api_enable_cors_support=True)) as on, \
         Gateway(Settings(port=0, rest_api_port=free_port(), models=models)) as off:
        yield on, off


def requests(client: httpx.Client) -> dict[str, httpx.Response]:
    return {
        "predict": client.post("/v1/models/default:predict", json={"instances": [1.0]}),
        "status": client.get("/v1/models/default"),
        "metadata": client.get("/v1/models/default/metadata"),
        "bad request": client.post("/v1/models/default:predict", json={"instances": "x"}),
        "unknown model": client.get("/v1/models/nope"),
        "unknown path": client.get("/v1/nothing/here"),
        "wrong method": client.put("/v1/models/default"),
        "preflight": client.options("/v1/models/default:predict",
                                    headers={"Origin": "https://app.example",
                                             "Access-Control-Request-Method": "POST"}),
        "preflight without origin": client.options("/v1/models/default:predict"),
    }


def test_every_v1_answer_carries_tf_serving_cors_headers(gateways):
    on, _ = gateways
    with httpx.Client(base_url=on.url, timeout=30) as client:
        answers = requests(client)
    assert answers["predict"].json() == {"predictions": [2.5]}
    assert {name: r.status_code for name, r in answers.items()} == {
        "predict": 200, "status": 200, "metadata": 200, "bad request": 400, "unknown model": 404,
        "unknown path": 404, "wrong method": 405, "preflight": 200, "preflight without origin": 400}
    for name, response in answers.items():
        assert cors_headers(response) == CORS, name
    assert answers["preflight"].content == b""
    assert answers["preflight without origin"].json() == {
        "error": "Origin header is missing in CORS preflight"}


def test_no_cors_headers_outside_v1(gateways):
    on, _ = gateways
    for path in ("/healthz", "/readyz", "/metrics"):
        response = httpx.get(on.url + path, timeout=30)
        assert response.status_code == 200 and cors_headers(response) == {}, path


def test_without_the_flag_no_headers_but_preflight_still_answered_as_tf_serving(gateways):
    _, off = gateways
    with httpx.Client(base_url=off.url, timeout=30) as client:
        answers = requests(client)
    for name, response in answers.items():
        assert cors_headers(response) == {}, name
    assert answers["predict"].status_code == 200
    assert answers["preflight"].status_code == 200
    assert answers["preflight without origin"].status_code == 400
