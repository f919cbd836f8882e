"""TF Serving's REST API on a real gateway serving TF Serving's own test models and ours.

Expected answers come from TF Serving's tests (tests/fixtures/tfserving/README.md)
and its api_rest.md.
"""
from __future__ import annotations

import asyncio
import base64
import json
import math

import httpx
import numpy as np
import pytest

from serving.settings import BatchingConfig, ModelConfig, Settings, VersionPolicy
from tests.conftest import Gateway, free_port


@pytest.fixture(scope="module")
def gateway(tfserving_dir, models_dir) -> Gateway:
    models = (
        ModelConfig(name="default", base_path=str(tfserving_dir / "saved_model_half_plus_two_cpu")),
        ModelConfig(name="half_plus_three", base_path=str(tfserving_dir / "saved_model_half_plus_three")),
        ModelConfig(
            name="two_versions",
            base_path=str(tfserving_dir / "saved_model_half_plus_two_2_versions"),
            version_policy=VersionPolicy(kind="all"),
            version_labels={"stable": 123, "canary": 124},
        ),
        ModelConfig(name="natality", base_path=str(models_dir / "natality")),
        ModelConfig(name="image_classifier", base_path=str(models_dir / "image_classifier")),
    )
    settings = Settings(
        port=0, rest_api_port=free_port(), models=models, enable_batching=True,
        batching=BatchingConfig(max_batch_size=32, batch_timeout_micros=5000, max_enqueued_batches=64),
        max_request_bytes=1 << 20, max_rows_per_request=1000,
    )
    with Gateway(settings) as running:
        yield running


def post(gateway: Gateway, path: str, body, **kwargs) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(gateway.url + path, content=content, timeout=60, **kwargs)


def get(gateway: Gateway, path: str) -> httpx.Response:
    return httpx.get(gateway.url + path, timeout=60)


# -- TF Serving's own answers -------------------------------------------------------------

def test_predict_row_format(gateway):
    response = post(gateway, "/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [3.0, 3.5, 4.0]}
    assert response.headers["content-type"] == "application/json"


def test_predict_columnar_format(gateway):
    response = post(gateway, "/v1/models/default:predict", {"inputs": [2.0, 3.0, 4.0]})
    assert response.json() == {"outputs": [3.0, 3.5, 4.0]}


def test_predict_named_input_row_objects(gateway):
    response = post(gateway, "/v1/models/default:predict", {"instances": [{"x": 2.0}, {"x": 4.0}]})
    assert response.json() == {"predictions": [3.0, 4.0]}


def test_predict_columnar_named(gateway):
    response = post(gateway, "/v1/models/default:predict", {"inputs": {"x": [[2.0], [4.0]]}})
    assert response.json() == {"outputs": [[3.0], [4.0]]}


def test_exponent_notation_accepted(gateway):
    response = post(gateway, "/v1/models/default:predict", b'{"instances": [2e0, 0.3E1, 40e-1]}')
    assert response.json() == {"predictions": [3.0, 3.5, 4.0]}


def test_nan_and_infinity_tokens_in_and_out(gateway):
    response = post(gateway, "/v1/models/default:predict",
                    b'{"instances": [NaN, Infinity, -Infinity, 2.0]}')
    assert response.status_code == 200, response.text
    text = response.text
    assert "NaN" in text and "-Infinity" in text
    values = json.loads(text)["predictions"]
    assert math.isnan(values[0]) and values[1] == math.inf and values[2] == -math.inf
    assert values[3] == 3.0


def test_classify(gateway):
    response = post(gateway, "/v1/models/default:classify",
                    {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
    assert response.status_code == 200, response.text
    assert response.json() == {"results": [[["", 3.0]]]}


def test_regress(gateway):
    response = post(gateway, "/v1/models/default:regress",
                    {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}, {"x": 4.0}]})
    assert response.json() == {"results": [3.0, 4.0]}


def test_regress_with_context(gateway):
    response = post(gateway, "/v1/models/half_plus_three:regress",
                    {"signature_name": "tensorflow/serving/regress", "context": {"x": 1.0},
                     "examples": [{}, {}]})
    assert response.status_code == 200, response.text
    assert response.json() == {"results": [3.5, 3.5]}


def test_regress_api_rest_example(gateway):
    """api_rest.md's own example on half_plus_three."""
    response = post(gateway, "/v1/models/half_plus_three:regress",
                    {"signature_name": "tensorflow/serving/regress",
                     "examples": [{"x": 1.0}, {"x": 2.0}]})
    assert response.json() == {"results": [3.5, 4.0]}


def test_half_plus_three(gateway):
    response = post(gateway, "/v1/models/half_plus_three:predict", {"instances": [1.0, 2.0, 5.0]})
    assert response.json() == {"predictions": [3.5, 4.0, 5.5]}


def test_model_status(gateway):
    response = get(gateway, "/v1/models/default")
    assert response.json() == {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]}
    assert get(gateway, "/v1/models/default/versions/123").json() == response.json()


def test_model_status_all_versions_and_label(gateway):
    versions = [s["version"] for s in get(gateway, "/v1/models/two_versions").json()["model_version_status"]]
    assert versions == ["123", "124"]
    labeled = get(gateway, "/v1/models/two_versions/labels/canary").json()
    assert [s["version"] for s in labeled["model_version_status"]] == ["124"]


def test_metadata_is_tf_servings_own_answer(gateway, tfserving_files):
    expected = json.loads((tfserving_files / "half_plus_two_model_metadata.json").read_text())
    assert get(gateway, "/v1/models/default/metadata").json() == expected
    assert get(gateway, "/v1/models/default/versions/123/metadata").json() == expected


def test_two_version_metadata_and_labels(gateway, tfserving_files):
    expected = json.loads((tfserving_files / "saved_model_half_plus_two_2_versions_metadata.json").read_text())
    expected["model_spec"]["name"] = "two_versions"
    assert get(gateway, "/v1/models/two_versions/labels/stable/metadata").json() == expected
    canary = get(gateway, "/v1/models/two_versions/labels/canary/metadata").json()
    assert canary["model_spec"]["version"] == "124"
    latest = get(gateway, "/v1/models/two_versions/metadata").json()
    assert latest["model_spec"]["version"] == "124"


def test_predict_by_version_and_label(gateway):
    for path in ("/v1/models/two_versions/versions/123:predict",
                 "/v1/models/two_versions/labels/stable:predict",
                 "/v1/models/two_versions/labels/canary:predict"):
        response = post(gateway, path, {"instances": [2.0]})
        assert response.json() == {"predictions": [3.0]}, path


# -- our example models -------------------------------------------------------------------

def test_natality_rows_match_the_formula(gateway):
    from serving.examples import natality

    rows = natality.sample_rows(16, seed=7)
    instances = [
        {key: value.tolist()[i] for key, value in rows.items()}
        for i in range(16)
    ]
    response = post(gateway, "/v1/models/natality:predict", {"instances": instances})
    assert response.status_code == 200, response.text
    predictions = np.array(response.json()["predictions"])
    expected = natality.expected_weight(**rows)
    assert np.abs(predictions - expected).max() < natality.TOLERANCE_POUNDS


def test_natality_columnar_with_b64_strings(gateway):
    body = {"inputs": {
        "is_male": [{"b64": base64.b64encode(b"True").decode()}, "False"],
        "mother_age": [25.0, 31.5],
        "plurality": ["Single(1)", "Twins(2)"],
        "gestation_weeks": [39.0, 37.0],
    }}
    response = post(gateway, "/v1/models/natality:predict", body)
    assert response.status_code == 200, response.text
    assert len(response.json()["outputs"]) == 2


def test_image_classifier_b64_jpeg_multiple_outputs(gateway):
    from serving.examples import image

    jpegs = image.sample_jpegs(2, seed=3)
    instances = [{"image_bytes": {"b64": base64.b64encode(j).decode()}} for j in jpegs]
    response = post(gateway, "/v1/models/image_classifier:predict", {"instances": instances})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 2
    for row in predictions:
        assert set(row) == {"scores", "classes"}
        assert len(row["scores"]) == 5 and len(row["classes"]) == 5


# -- errors: {"error": ...} with TF Serving's statuses --------------------------------------

@pytest.mark.parametrize("path, body, status, fragment", [
    ("/v1/models/nope:predict", {"instances": [1.0]}, 404, "Servable not found for request: Latest(nope)"),
    ("/v1/models/default/versions/999:predict", {"instances": [1.0]}, 404, "Specific(default, 999)"),
    ("/v1/models/two_versions/labels/beta:predict", {"instances": [1.0]}, 400,
     "Unrecognized servable version label: beta"),
    ("/v1/models/default:predict", b"{not json", 400, "JSON Parse error"),
    ("/v1/models/default:predict", b"[1, 2]", 400, "JSON Value: [1,2] Is not object"),
    ("/v1/models/default:predict", {"instances": [1.0], "inputs": [1.0]}, 400,
     "expecting only one of 'inputs' or 'instances' keys"),
    ("/v1/models/default:predict", {"signature_name": "serving_default"}, 400,
     "Missing 'inputs' or 'instances' key"),
    ("/v1/models/default:predict", {"instances": ["abc"]}, 400,
     'JSON Value: "abc" Type: String is not of expected type'),
    ("/v1/models/default:predict", {"instances": [[1.0], [2.0, 3.0]]}, 400,
     "Expecting tensor size: 1 but got: 2"),
    ("/v1/models/default:predict", {"instances": [{"y": 1.0}]}, 400, "Unknown input(s) ['y']"),
    ("/v1/models/default:predict", {"signature_name": "nope", "instances": [1.0]}, 400,
     'Serving signature name: "nope" not found'),
    ("/v1/models/default:classify", {"examples": [{"x": 2.0}]}, 400,
     "method_name to be tensorflow/serving/classify. Was: tensorflow/serving/predict"),
    ("/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": []}, 400,
     "'examples' value is an empty array"),
    ("/v1/models/default:regress", {"signature_name": "regress_x_to_y", "context": {"x": 1.0},
                                     "examples": [{"x": 2.0}]}, 400,
     "Feature(s) ['x'] of example 0 also appear in 'context'"),
    ("/v1/models/natality:predict", {"instances": [{"is_male": 1, "mother_age": 25.0,
                                                    "plurality": "Single(1)", "gestation_weeks": 39.0}]},
     400, "key: is_male of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: 1 Type: Number is not of expected "
          "type: string"),
    ("/v1/models/natality:predict", {"instances": [{"is_male": "True"}]}, 400,
     "Missing input(s) ['gestation_weeks', 'mother_age', 'plurality']"),
    ("/v1/models/default:explode", {"instances": [1.0]}, 404,
     "Malformed request: POST /v1/models/default:explode"),
    ("/v1/models/default:predict", {"instances": [0.0] * 1001}, 413, "Request has 1001 rows; the limit is 1000"),
])
def test_errors(gateway, path, body, status, fragment):
    response = post(gateway, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and error
    assert fragment in error


def test_body_over_the_limit_is_413(gateway):
    response = post(gateway, "/v1/models/default:predict", b'{"instances": [' + b"1.0," * 300_000 + b"1.0]}")
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_bad_timeout_header_is_400(gateway):
    response = post(gateway, "/v1/models/default:predict", {"instances": [1.0]},
                    headers={"X-Request-Timeout-Ms": "soon"})
    assert response.status_code == 400


def test_model_names_never_reach_the_filesystem(gateway):
    for path in ("/v1/models/..%2F..%2Fetc:predict", "/v1/models/%2Ftmp:predict"):
        assert post(gateway, path, {"instances": [1.0]}).status_code == 404
    assert get(gateway, "/v1/models/..").status_code == 404


def test_answers_outside_the_model_routes_are_frameworks_as_before(gateway):
    """POSTs skip FastAPI's stack only where its router would pick the model route: other
    methods still get its 405 (the route table's ``Allow``), other paths its 404."""
    response = httpx.put(gateway.url + "/v1/models/default", timeout=60)
    assert (response.status_code, response.headers["allow"]) == (405, "POST")
    response = post(gateway, "/v1/models/a%0Ab:predict", {"instances": [1.0]})
    assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})


def test_health_ready_and_metrics(gateway):
    assert get(gateway, "/healthz").status_code == 200
    assert get(gateway, "/readyz").status_code == 200
    text = get(gateway, "/metrics").text
    for name in ("tfgw_request_duration_seconds", "tfgw_queue_wait_seconds", "tfgw_batch_size_rows",
                 "tfgw_model_execution_seconds", "tfgw_queue_depth_rows", "tfgw_in_flight_requests",
                 "tfgw_requests_total", "tfgw_rejections_total"):
        assert name in text, name


# -- batching under concurrency -----------------------------------------------------------

@pytest.mark.slow
def test_200_concurrent_requests_get_their_own_answers_and_are_batched(gateway):
    calls_before = gateway.metric("tfgw_batch_size_rows_count", model="default")
    rows_before = gateway.metric("tfgw_batch_size_rows_sum", model="default")

    async def scenario() -> list[tuple[int, httpx.Response]]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=gateway.url, limits=limits, timeout=60) as client:
            async def one(i: int):
                body = {"instances": [float(i), float(i) + 0.5]}
                return i, await client.post("/v1/models/default:predict", json=body)
            return await asyncio.gather(*(one(i) for i in range(200)))

    for i, response in asyncio.run(scenario()):
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": [0.5 * i + 2, 0.5 * (i + 0.5) + 2]}
    calls = gateway.metric("tfgw_batch_size_rows_count", model="default") - calls_before
    rows = gateway.metric("tfgw_batch_size_rows_sum", model="default") - rows_before
    assert rows == 400
    assert calls < 200, f"{calls} model calls for 200 requests: nothing was merged"
    assert rows / calls > 1
