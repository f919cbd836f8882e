"""The Open Inference Protocol over REST (``serving.rest.v2``) on the gateway's HTTP port:
every route through tritonclient.http (binary and JSON tensors, URLs with and without a
version, errors read through its exception), the wire details with plain HTTP (headers,
status codes, error bodies), accounting, and a v2 and a TF Serving request merging into one
batch."""
from __future__ import annotations

import gzip
import json
import struct
import threading
import zlib
from functools import partial

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from serving.auth import exempt_paths
from serving.settings import BatchingConfig, ModelConfig, Settings
from tests.conftest import Gateway, free_port, wait_until
from tests.v2 import models
from tests.v2.models import assert_readiness, served_models, x

HALF_PLUS_TWO = "saved_model_half_plus_two_cpu"
MAX_REQUEST_BYTES = 1 << 20


@pytest.fixture(scope="module")
def gateway(tfserving_dir, held_model) -> Gateway:
    models = served_models(tfserving_dir, ModelConfig(name="held", base_path=str(held_model[0])))
    settings = Settings(port=0, rest_api_port=free_port(), models=models, max_rows_per_request=100,
                        max_request_bytes=MAX_REQUEST_BYTES, enable_batching=True,
                        batching=BatchingConfig(max_batch_size=16, batch_timeout_micros=1000, num_batch_threads=1))
    with Gateway(settings) as running:
        yield running


@pytest.fixture(scope="module")
def client(gateway):
    client = triton.InferenceServerClient(gateway.url.removeprefix("http://"))
    yield client
    client.close()


infer_input = partial(models.infer_input, triton)


def refused(call, *args, **kwargs) -> str:
    with pytest.raises(InferenceServerException) as info:
        call(*args, **kwargs)
    return info.value.message()


# --- tritonclient ---------------------------------------------------------------------------

def test_health_and_readiness_through_tritonclient(client):
    assert_readiness(client)


def test_metadata_through_tritonclient(client):
    server = client.get_server_metadata()
    assert server["name"] == "tf-gateway"
    assert server["extensions"] == ["binary_tensor_data", "model_repository"]
    expected = {"name": "half_plus_two", "versions": ["123"], "platform": "tensorflow_savedmodel",
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
                "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]}
    assert client.get_model_metadata("half_plus_two") == expected
    assert client.get_model_metadata("half_plus_two", "123") == expected
    both = client.get_model_metadata("two_versions", "canary")
    assert (both["name"], both["versions"]) == ("two_versions", ["123", "124"])
    assert "Servable not found" in refused(client.get_model_metadata, "no_such_model")


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
@pytest.mark.parametrize("version", ["", "123"], ids=["latest", "versioned"])
def test_infer_through_tritonclient(client, binary_in, binary_out, version):
    outputs = [triton.InferRequestedOutput("y", binary_data=binary_out)]
    result = client.infer("half_plus_two", [infer_input("x", x(), "FP32", binary_data=binary_in)],
                          model_version=version, outputs=outputs, request_id="r-1")
    np.testing.assert_array_equal(result.as_numpy("y"), x((3.0, 3.5, 4.0)))
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("half_plus_two", "123", "r-1")


def test_infer_without_outputs_answers_every_output_in_binary(client):
    values = np.arange(32, dtype=np.float32).reshape(2, 16)
    result = client.infer("vec16", [infer_input("x", values, "FP32")])
    assert (result.as_numpy("scaled").shape, result.as_numpy("total").shape) == ((2, 16), (2,))
    assert [o["name"] for o in result.get_response()["outputs"]] == ["scaled", "total"]
    assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_bytes_tensors_both_ways(client, binary):
    words = np.array([b"hello", b"", "caf\u00e9".encode()], dtype=object)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("upper", "length")]
    result = client.infer("text", [infer_input("text", words, "BYTES", binary_data=binary)], outputs=outputs)
    upper = [v if isinstance(v, bytes) else v.encode() for v in result.as_numpy("upper").tolist()]
    assert upper == [b"HELLO", b"", "CAF\u00c9".encode()]  # JSON: tritonclient gives str
    assert result.as_numpy("length").tolist() == [5, 0, 4]  # characters


def test_another_signature_by_parameter(client):
    result = client.infer("half_plus_two", [infer_input("inputs", x(), "FP32")],
                          parameters={"signature_name": "regress_x2_to_y3"})
    np.testing.assert_allclose(result.as_numpy("outputs"), x() * 0.5 + 3.0)


def test_version_label_in_the_url(client):
    result = client.infer("two_versions", [infer_input("x", x((1.0,)), "FP32")], model_version="canary")
    assert result.get_response()["model_version"] == "124"


@pytest.mark.parametrize(("model", "inputs", "outputs", "expected"), [
    ("no_such_model", [("x", "FP32")], None, "Servable not found"),
    ("half_plus_two", [("x", "FP64")], None, "Input 'x' has datatype FP64; the model expects FP32"),
    ("half_plus_two", [("z", "FP32")], None, "Missing input(s) ['x']"),
    ("half_plus_two", [("x", "FP32")], ["nope"], "unexpected inference output 'nope' for model 'half_plus_two'"),
])
def test_errors_through_tritonclient(client, model, inputs, outputs, expected):
    tensors = [infer_input(name, x().astype(datatype.lower().replace("fp", "float")), datatype)
               for name, datatype in inputs]
    requested = None if outputs is None else [triton.InferRequestedOutput(name) for name in outputs]
    assert expected in refused(client.infer, model, tensors, outputs=requested)


def test_a_version_that_is_not_served(client):
    assert "Servable not found" in refused(client.infer, "half_plus_two", [infer_input("x", x(), "FP32")],
                                           model_version="7")


def test_routes_we_do_not_serve_are_errors_tritonclient_reads(client):
    assert "Malformed request" in refused(client.get_model_config, "half_plus_two")
    assert "Servable not found for request: Latest(stats)" in refused(client.get_inference_statistics)


# --- the wire -------------------------------------------------------------------------------

def post(gateway, path, body: bytes | dict, headers=None) -> httpx.Response:
    content = json.dumps(body).encode() if isinstance(body, dict) else body
    return httpx.post(gateway.url + path, content=content, headers=headers or {}, timeout=30)


def binary_request(doc: dict, *buffers: bytes) -> tuple[bytes, dict]:
    head = json.dumps(doc).encode()
    return head + b"".join(buffers), {"Inference-Header-Content-Length": str(len(head))}


def test_health_answers(gateway):
    assert httpx.get(gateway.url + "/v2/health/live").json() == {"live": True}
    assert httpx.get(gateway.url + "/v2/health/ready").json() == {"ready": True}
    ready = httpx.get(gateway.url + "/v2/models/half_plus_two/versions/123/ready")
    assert (ready.status_code, ready.json()) == (200, {"name": "half_plus_two", "ready": True})
    unknown = httpx.get(gateway.url + "/v2/models/nope/ready")
    assert (unknown.status_code, unknown.json()) == (404, {"error": "Servable not found for request: Latest(nope)"})
    unknown_version = httpx.get(gateway.url + "/v2/models/nope/versions/3/ready")  # worded as metadata's 404
    assert unknown_version.json() == {"error": "Servable not found for request: Specific(nope, 3)"}
    not_served = httpx.get(gateway.url + "/v2/models/half_plus_two/versions/7/ready")
    assert not_served.status_code == 503
    assert not_served.json()["ready"] is False and "not ready" in not_served.json()["error"]
    label = httpx.get(gateway.url + "/v2/models/two_versions/versions/nolabel/ready")
    assert (label.status_code, label.json()) == (400, {"error": "Unrecognized servable version label: nolabel"})


def test_json_answer_has_no_binary_header(gateway):
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 1], "data": [[1], [2], [3]]}]}
    response = post(gateway, "/v2/models/half_plus_two/infer", doc)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in response.headers
    assert response.json() == {"model_name": "half_plus_two", "model_version": "123",
                               "outputs": [{"name": "y", "datatype": "FP32", "shape": [3, 1],
                                            "data": [2.5, 3.0, 3.5]}]}


def test_binary_answer_layout(gateway):
    doc = {"id": "7", "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 1],
                                  "parameters": {"binary_data_size": 8}}],
           "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    body, headers = binary_request(doc, np.array([1, 2], "<f4").tobytes())
    response = post(gateway, "/v2/models/half_plus_two/versions/123/infer", body, headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    size = int(response.headers["inference-header-content-length"])
    head = json.loads(response.content[:size])
    assert head == {"model_name": "half_plus_two", "model_version": "123", "id": "7",
                    "outputs": [{"name": "y", "datatype": "FP32", "shape": [2, 1],
                                 "parameters": {"binary_data_size": 8}}]}
    assert np.frombuffer(response.content[size:], "<f4").tolist() == [2.5, 3.0]


def test_binary_bytes_input_is_length_prefixed(gateway):
    data = b"".join(struct.pack("<I", len(s)) + s for s in (b"ab", b"xyz"))
    doc = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2],
                       "parameters": {"binary_data_size": len(data)}}],
           "outputs": [{"name": "upper"}]}
    body, headers = binary_request(doc, data)
    response = post(gateway, "/v2/models/text/infer", body, headers)
    assert response.json()["outputs"] == [{"name": "upper", "datatype": "BYTES", "shape": [2], "data": ["AB", "XYZ"]}]


@pytest.mark.parametrize(("body", "headers", "status", "expected"), [
    (b"{}", {"Inference-Header-Content-Length": "x"}, 400, "Inference-Header-Content-Length must be"),
    (b"{}", {"Inference-Header-Content-Length": "3"}, 400, "Inference-Header-Content-Length must be"),
    (b"{}", {"Inference-Header-Content-Length": "0"}, 400, "Raw binary requests"),
    (b"{}", {"Content-Encoding": "br"}, 400, "Content-Encoding 'br' is not supported"),
    (b"{}", {"Content-Encoding": "gzip"}, 400, "The gzip body does not decompress"),
    (gzip.compress(b"{}")[:-3], {"Content-Encoding": "gzip"}, 400, "cut short"),
    (gzip.compress(b" " * (MAX_REQUEST_BYTES + 1)), {"Content-Encoding": "gzip"}, 413, "once decompressed"),
    (zlib.compress(b'{"inputs": 3}'), {"Content-Encoding": "deflate"}, 400, "'inputs' must be a list"),
    (b"[1]", {}, 400, "Is not object"),
    (b'{"inputs": 3}', {}, 400, "'inputs' must be a list"),
    (b'{"id": 3, "inputs": []}', {}, 400, "'id' must be a string"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 1], "data": [1]}]}', {}, 400,
     "Input 'x' has 1 values in 'data'; shape [2,1] needs 2"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1000, 1], "data": [1]}]}', {}, 413,
     "Input 'x' has 1000 rows; the limit is 100"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "parameters": {"binary_data_size": 4}}]}',
     {}, 400, "binary_data_size add up to 4 bytes, but 0 bytes follow"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1]}]}', {}, 400, "either 'data' or"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1]}], "parameters": '
     b'{"sequence_id": 4}}', {}, 400, "sequence batching is not supported"),
])
def test_bad_requests_get_their_status_and_an_error(gateway, body, headers, status, expected):
    response = post(gateway, "/v2/models/half_plus_two/infer", body, headers)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert expected in response.json()["error"]


def test_body_over_the_limit_is_413(gateway):
    response = post(gateway, "/v2/models/half_plus_two/infer", b" " * (MAX_REQUEST_BYTES + 1))
    assert response.status_code == 413
    assert "over the limit" in response.json()["error"]


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v2/models/half_plus_two/config"), ("GET", "/v2/models/half_plus_two/stats"),
    ("POST", "/v2/models/half_plus_two"), ("GET", "/v2/models/half_plus_two/infer"),
    ("PUT", "/v2/models/half_plus_two/infer"), ("GET", "/v2/repository/index"), ("POST", "/v2"),
    ("GET", "/v2/trace/setting"), ("DELETE", "/v2/health/live"),
])
def test_every_other_v2_path_is_404_with_an_error(gateway, method, path):
    response = httpx.request(method, gateway.url + path, timeout=30)
    assert response.status_code == 404, response.text
    assert response.json() == {"error": f"Malformed request: {method} {path}"}


def test_v2_infers_are_counted_as_such(gateway, client):
    before = gateway.metric("tfgw_requests_total", model="half_plus_two", method="infer", code="OK", api="v2")
    tfs_before = gateway.metric(":tensorflow:serving:request_count", model_name="half_plus_two", status="OK")
    client.infer("half_plus_two", [infer_input("x", x(), "FP32")])
    assert gateway.metric("tfgw_requests_total", model="half_plus_two", method="infer", code="OK",
                          api="v2") == before + 1
    assert gateway.metric(":tensorflow:serving:request_count", model_name="half_plus_two",
                          status="OK") == tfs_before + 1
    assert gateway.metric(":tensorflow:serving:request_latency_count", model_name="half_plus_two", API="infer",
                          entrypoint="REST") >= 1


def test_probes_are_exempt_from_auth_by_default():
    paths = exempt_paths(Settings())
    for path in ("/v2/health/live", "/v2/health/ready", "/inference.GRPCInferenceService/ServerLive",
                 "/inference.GRPCInferenceService/ServerReady"):
        assert path in paths
    assert "/v2/models/m/infer" not in paths


# --- one batch for both protocols -----------------------------------------------------------

def test_a_v2_and_a_tf_serving_request_merge_into_one_batch(gateway, gate):
    """The held request takes the one batch thread; a v2 infer and a TF Serving predict then
    queue behind it and run together: one batch of 2 rows."""
    results: dict[str, httpx.Response] = {}

    def send(key: str, path: str, doc: dict) -> None:
        results[key] = httpx.post(gateway.url + path, json=doc, timeout=120)

    def v2_doc(value: float, hold: int) -> dict:
        return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [value]},
                           {"name": "hold", "datatype": "INT64", "shape": [1], "data": [hold]}]}

    batches = gateway.metric("tfgw_batch_size_rows_count", model="held")
    rows = gateway.metric("tfgw_batch_size_rows_sum", model="held")
    threads = [threading.Thread(target=send, args=("held", "/v2/models/held/infer", v2_doc(0.0, 1)))]
    threads[0].start()
    wait_until(lambda: gate.waiting == 1, what="the held request to reach the gate")
    threads += [threading.Thread(target=send, args=("v2", "/v2/models/held/infer", v2_doc(1.0, 0))),
                threading.Thread(target=send, args=("tfs", "/v1/models/held:predict",
                                                    {"inputs": {"x": [2.0], "hold": [0]}}))]
    for thread in threads[1:]:
        thread.start()
    wait_until(lambda: gateway.metric("tfgw_queue_depth_rows", model="held") == 2, what="both requests queued")
    gate.open()
    for thread in threads:
        thread.join(timeout=120)
    assert results["v2"].json()["outputs"][0]["data"] == [2.0]
    assert results["tfs"].json() == {"outputs": [3.0]}
    assert gateway.metric("tfgw_batch_size_rows_count", model="held") == batches + 2
    assert gateway.metric("tfgw_batch_size_rows_sum", model="held") == rows + 3


def test_not_ready_is_503_with_an_error(gateway_factory, tfserving_dir):
    failing = gateway_factory(models=(ModelConfig(name="half_plus_two",
                                                  base_path=str(tfserving_dir / HALF_PLUS_TWO)),))
    failing.service.fail("the gRPC server stopped")
    ready = httpx.get(failing.url + "/v2/health/ready", timeout=30)
    assert (ready.status_code, ready.json()) == (503, {"ready": False, "error": "not ready: the gRPC server stopped"})
    model = httpx.get(failing.url + "/v2/models/half_plus_two/ready", timeout=30)
    assert (model.status_code, model.json()["ready"]) == (503, False)
    assert httpx.get(failing.url + "/v2/health/live", timeout=30).json() == {"live": True}


def test_cors_on_v2_paths(gateway_factory, tfserving_dir):
    on = gateway_factory(models=(ModelConfig(name="half_plus_two", base_path=str(tfserving_dir / HALF_PLUS_TWO)),),
                         rest_api_enable_cors_support=True)
    with httpx.Client(base_url=on.url, timeout=30) as client:
        answers = {
            "infer": client.post("/v2/models/half_plus_two/infer", json={
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}),
            "server": client.get("/v2"),
            "ready": client.get("/v2/health/ready"),
            "unknown": client.get("/v2/nothing"),
            "preflight": client.options("/v2/models/half_plus_two/infer",
                                        headers={"Origin": "https://app.example",
                                                 "Access-Control-Request-Method": "POST"}),
            "preflight without origin": client.options("/v2/models/half_plus_two/infer"),
        }
        healthz = client.get("/healthz")
    assert {name: r.status_code for name, r in answers.items()} == {
        "infer": 200, "server": 200, "ready": 200, "unknown": 404, "preflight": 200, "preflight without origin": 400}
    for name, response in answers.items():
        assert response.headers.get("access-control-allow-origin") == "*", name
    assert "access-control-allow-origin" not in healthz.headers


def test_the_timeout_parameter_is_the_deadline(gateway, gate):
    """A request behind a held call, with parameters.timeout of 0.2 s (in microseconds, as
    tritonclient sends it), is answered 504 while the held call still waits."""
    held = threading.Thread(target=httpx.post, args=(gateway.url + "/v2/models/held/infer",),
                            kwargs={"timeout": 120, "json": {"inputs": [
                                {"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]},
                                {"name": "hold", "datatype": "INT64", "shape": [1], "data": [1]}]}})
    held.start()
    wait_until(lambda: gate.waiting == 1, what="the held request to reach the gate")
    doc = {"parameters": {"timeout": 200_000}, "inputs": [
        {"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]},
        {"name": "hold", "datatype": "INT64", "shape": [1], "data": [0]}]}
    response = post(gateway, "/v2/models/held/infer", doc)
    assert response.status_code == 504, response.text
    assert set(response.json()) == {"error"}
    assert gate.waiting == 1
    gate.open()
    held.join(timeout=120)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_from_tritonclient(client, algorithm):
    result = client.infer("half_plus_two", [infer_input("x", x(), "FP32")], request_compression_algorithm=algorithm,
                          response_compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("y"), x((3.0, 3.5, 4.0)))


def test_metadata_of_another_signature(gateway):
    doc = httpx.get(gateway.url + "/v2/models/half_plus_two/versions/123?signature_name=regress_x2_to_y3",
                    timeout=30).json()
    assert (doc["inputs"], doc["outputs"]) == ([{"name": "inputs", "datatype": "FP32", "shape": [-1, 1]}],
                                               [{"name": "outputs", "datatype": "FP32", "shape": [-1, 1]}])
    unknown = httpx.get(gateway.url + "/v2/models/half_plus_two?signature_name=nope", timeout=30)
    assert unknown.status_code == 400 and set(unknown.json()) == {"error"}
