"""``--auth_token_file``: every route of TF Serving's REST API and every gRPC method needs a
bearer token (REST ``Authorization``, gRPC ``authorization`` metadata), over plaintext and
TLS; the probes (health, readiness, metrics, gRPC health) stay open unless ``--auth_exempt``
says otherwise. Run with ``-s`` to see the route x transport x token table."""
from __future__ import annotations

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.auth import BearerTokens, read_token_file
from serving.cli import build_settings
from serving.errors import Unauthenticated
from serving.settings import ModelConfig, Settings, VersionPolicy
from serving.tfs_config import ConfigError
from tests.conftest import Gateway, free_port
from tests.test_tls import credentials
from tests.test_tls import pki as certificates

pki = certificates  # the certificates fixture, shared with the TLS tests

TOKEN = "s3cret-token-1"
OTHER = "second-token"
TOKENS = {"right": f"Bearer {TOKEN}", "second": f"bearer {OTHER}", "absent": None,
          "wrong": "Bearer not-a-token", "wrong scheme": f"Basic {TOKEN}"}
ALLOWED = ("right", "second")

REST_ROUTES = [
    ("predict", "POST", "/v1/models/default:predict", {"instances": [1.0]}),
    ("classify", "POST", "/v1/models/default:classify", {"signature_name": "classify_x_to_y",
                                                         "examples": [{"x": 1.0}]}),
    ("regress", "POST", "/v1/models/default:regress", {"signature_name": "regress_x_to_y",
                                                       "examples": [{"x": 1.0}]}),
    ("predict by version", "POST", "/v1/models/two/versions/124:predict", {"instances": [1.0]}),
    ("predict by label", "POST", "/v1/models/two/labels/stable:predict", {"instances": [1.0]}),
    ("status", "GET", "/v1/models/default", None),
    ("status of a version", "GET", "/v1/models/two/versions/123", None),
    ("metadata", "GET", "/v1/models/default/metadata", None),
    ("metadata by label", "GET", "/v1/models/two/labels/stable/metadata", None),
    ("OpenAPI schema", "GET", "/openapi.json", None),
    ("docs", "GET", "/docs", None),
    ("runners", "GET", "/runners", None),
]
OPEN_REST_ROUTES = [
    ("healthz", "GET", "/healthz", None),
    ("readyz", "GET", "/readyz", None),
    ("metrics", "GET", "/metrics", None),
]


def models(tfserving_dir) -> tuple[ModelConfig, ...]:
    return (ModelConfig(name="default", base_path=str(tfserving_dir / "saved_model_half_plus_two_cpu")),
            ModelConfig(name="two", base_path=str(tfserving_dir / "saved_model_half_plus_two_2_versions"),
                        version_policy=VersionPolicy(kind="all"), version_labels={"stable": 123}))


@pytest.fixture(scope="module")
def gateway(tfserving_dir):
    settings = Settings(port=free_port(), rest_api_port=free_port(), models=models(tfserving_dir),
                        auth_tokens=(TOKEN, OTHER), rest_api_enable_cors_support=True)
    with Gateway(settings) as running:
        yield running


def rest_call(gateway: Gateway, method: str, path: str, body, token: str | None) -> httpx.Response:
    headers = {"authorization": token} if token is not None else {}
    return httpx.request(method, gateway.url + path, json=body, headers=headers, timeout=30)


@pytest.mark.parametrize("token", sorted(TOKENS))
@pytest.mark.parametrize("name,method,path,body", REST_ROUTES, ids=[r[0] for r in REST_ROUTES])
def test_rest_routes_need_a_token(gateway, name, method, path, body, token):
    answer = rest_call(gateway, method, path, body, TOKENS[token])
    print(f"\nAUTH REST {name:<22} {token:<13} {answer.status_code}")
    if token in ALLOWED:
        assert answer.status_code == 200, answer.text
    else:
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"] == "Bearer"
        assert "bearer" in answer.json()["error"].lower()
        if path.startswith("/v1/"):  # TF Serving's CORS paths: a browser can read the 401
            assert answer.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("token", ["right", "absent"])
@pytest.mark.parametrize("name,method,path,body", OPEN_REST_ROUTES, ids=[r[0] for r in OPEN_REST_ROUTES])
def test_probes_stay_open(gateway, name, method, path, body, token):
    answer = rest_call(gateway, method, path, body, TOKENS[token])
    print(f"\nAUTH REST {name:<22} {token:<13} {answer.status_code}")
    assert answer.status_code == 200, answer.text


def test_cors_preflight_needs_no_token(gateway):
    answer = httpx.options(gateway.url + "/v1/models/default:predict", headers={"origin": "https://a.example"})
    assert answer.status_code == 200


def test_exemptions_are_configurable(tfserving_dir):
    settings = Settings(port=0, rest_api_port=free_port(), models=models(tfserving_dir)[:1],
                        auth_tokens=(TOKEN,), auth_exempt=("/readyz", "/v1/models/"))
    with Gateway(settings) as running:
        assert rest_call(running, "GET", "/readyz", None, None).status_code == 200
        assert rest_call(running, "POST", "/v1/models/default:predict", {"instances": [1.0]}, None).status_code == 200
        assert rest_call(running, "GET", "/healthz", None, None).status_code == 401
        assert rest_call(running, "GET", "/metrics", None, None).status_code == 401


def test_tokens_compare_exactly():
    tokens = BearerTokens([TOKEN], exempt=())
    tokens.check(f"Bearer {TOKEN}")
    tokens.check(f"BEARER   {TOKEN}  ".encode())
    for bad in (None, "", "Bearer", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Token {TOKEN}", TOKEN):
        with pytest.raises(Unauthenticated):
            tokens.check(bad)
    with pytest.raises(ValueError):
        BearerTokens([], exempt=())


def test_the_token_file_and_the_flag(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"# rotated 2026-12\n{TOKEN}\n\n  {OTHER}  \n")
    assert read_token_file(str(path)) == (TOKEN, OTHER)
    settings = build_settings([f"--auth_token_file={path}", "--model_base_path=/m"], environ={})
    assert [t.get_secret_value() for t in settings.auth_tokens] == [TOKEN, OTHER]
    assert TOKEN not in repr(settings)  # secrets stay out of logs
    (tmp_path / "empty").write_text("# nothing\n")
    for bad in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(ConfigError, match="--auth_token_file"):
            build_settings([f"--auth_token_file={bad}", "--model_base_path=/m"], environ={})


# --- gRPC: every method of TF Serving's services, plaintext and TLS, on both servers ------

def _examples(signature: str, request):
    request.model_spec.name = "default"
    request.model_spec.signature_name = signature
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.append(1.0)
    return request


def _multi():
    request = inference_pb2.MultiInferenceRequest()
    task = request.tasks.add()
    task.model_spec.name = "default"
    task.model_spec.signature_name = "regress_x_to_y"
    task.method_name = "tensorflow/serving/regress"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.append(1.0)
    return request


def _reload(tfserving_dir):
    request = model_management_pb2.ReloadConfigRequest()
    for config in models(tfserving_dir):
        entry = request.config.model_config_list.config.add(name=config.name, base_path=config.base_path,
                                                           model_platform="tensorflow")
        if config.version_labels:
            entry.model_version_policy.all.SetInParent()
            entry.version_labels.update(config.version_labels)
    return request


def grpc_methods(tfserving_dir):
    """(name, stub method factory, request) for every method; health last (exempt)."""
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = "default"
    predict.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata.model_spec.name = "default"
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "default"
    prediction = prediction_service_pb2_grpc.PredictionServiceStub
    model = model_service_pb2_grpc.ModelServiceStub
    return [
        ("Predict", lambda ch: prediction(ch).Predict, predict),
        ("Classify", lambda ch: prediction(ch).Classify,
         _examples("classify_x_to_y", classification_pb2.ClassificationRequest())),
        ("Regress", lambda ch: prediction(ch).Regress, _examples("regress_x_to_y", regression_pb2.RegressionRequest())),
        ("MultiInference", lambda ch: prediction(ch).MultiInference, _multi()),
        ("GetModelMetadata", lambda ch: prediction(ch).GetModelMetadata, metadata),
        ("GetModelStatus", lambda ch: model(ch).GetModelStatus, status_request),
        ("HandleReloadConfigRequest", lambda ch: model(ch).HandleReloadConfigRequest, _reload(tfserving_dir)),
    ]


@pytest.fixture(scope="module")
def grpc_gateways(tfserving_dir, grpc_server, pki):
    """A plaintext and a TLS gateway on ``grpc_server``, both with the tokens."""
    plain = Settings(port=free_port(), rest_api_port=free_port(), host="127.0.0.1", models=models(tfserving_dir),
                     grpc_server=grpc_server, auth_tokens=(TOKEN, OTHER))
    secure = plain.model_copy(update={"port": free_port(), "rest_api_port": free_port(), "ssl_config": pki.tls()})
    with Gateway(plain) as one, Gateway(secure) as two:
        yield {"plaintext": one, "TLS": two}


def channel_for(gateways, transport: str, pki, token: str | None) -> grpc.Channel:
    gateway = gateways[transport]
    if transport == "plaintext":
        interceptors = [_Authorization(token)] if token is not None else []
        return grpc.intercept_channel(grpc.insecure_channel(gateway.grpc_target), *interceptors)
    ssl = credentials(pki)
    if token is not None and token.startswith("Bearer "):  # as TLS clients send tokens
        ssl = grpc.composite_channel_credentials(ssl, grpc.access_token_call_credentials(token[len("Bearer "):]))
    elif token is not None:
        return grpc.intercept_channel(grpc.secure_channel(gateway.grpc_target, ssl), _Authorization(token))
    return grpc.secure_channel(gateway.grpc_target, ssl)


class _Authorization(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds ``authorization: <value>`` to every call (what a plaintext client can do)."""

    def __init__(self, value: str) -> None:
        self.value = value

    def _with(self, details):
        metadata = [*(details.metadata or ()), ("authorization", self.value)]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(details, metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with(details), request)


class _Details(grpc.ClientCallDetails):
    def __init__(self, details, metadata) -> None:
        self.method, self.timeout, self.credentials = details.method, details.timeout, details.credentials
        self.wait_for_ready, self.compression = details.wait_for_ready, details.compression
        self.metadata = metadata


@pytest.mark.parametrize("token", ["right", "second", "absent", "wrong", "wrong scheme"])
@pytest.mark.parametrize("transport", ["plaintext", "TLS"])
def test_grpc_methods_need_a_token(grpc_gateways, pki, tfserving_dir, grpc_server, transport, token):
    with channel_for(grpc_gateways, transport, pki, TOKENS[token]) as channel:
        for name, method, request in grpc_methods(tfserving_dir):
            try:
                method(channel)(request, timeout=30)
                code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = error.code()
                details = error.details()
            print(f"\nAUTH gRPC/{grpc_server} {transport:<9} {name:<26} {token:<13} {code.name}")
            if token in ALLOWED:
                assert code == grpc.StatusCode.OK, (name, details)
            else:
                assert code == grpc.StatusCode.UNAUTHENTICATED, name
                assert "bearer" in details.lower(), details
        health = health_pb2_grpc.HealthStub(channel)  # open without a token
        serving = health_pb2.HealthCheckResponse.SERVING
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=30).status == serving
        assert next(health.Watch(health_pb2.HealthCheckRequest(), timeout=30)).status == serving


def test_rest_over_tls_needs_a_token(tfserving_dir, pki):
    from tests.test_tls import https_context

    settings = Settings(port=0, rest_api_port=free_port(), host="127.0.0.1", models=models(tfserving_dir)[:1],
                        auth_tokens=(TOKEN,), ssl_config=pki.tls(), rest_api_ssl=True)
    with Gateway(settings) as gateway, \
            httpx.Client(base_url=gateway.url, verify=https_context(pki), timeout=30) as client:
        body = {"instances": [2.0]}
        absent = client.post("/v1/models/default:predict", json=body)
        right = client.post("/v1/models/default:predict", json=body, headers={"authorization": f"Bearer {TOKEN}"})
        print(f"\nAUTH REST/TLS predict absent {absent.status_code}, right {right.status_code}")
        assert absent.status_code == 401
        assert right.json() == {"predictions": [3.0]}


@pytest.mark.parametrize("tokens", ['[""]', '["has space"]', '["tab\\there"]', '["ok", ""]'])
def test_empty_or_blank_tokens_are_refused_from_any_source(tokens):
    """TFGW_AUTH_TOKENS='[""]' would otherwise let ``Authorization: Bearer`` in."""
    with pytest.raises(ConfigError, match="bearer token must be"):
        build_settings(["--model_base_path=/m"], environ={"TFGW_AUTH_TOKENS": tokens})
    with pytest.raises(ValueError):
        BearerTokens([""], exempt=())


def test_browsers_may_send_the_token_with_cors_on(gateway):
    """With tokens and CORS both on, the preflight allows the Authorization header."""
    answer = httpx.options(gateway.url + "/v1/models/default:predict",
                           headers={"origin": "https://a.example", "access-control-request-headers": "authorization"})
    assert answer.status_code == 200
    allowed = [h.strip().lower() for h in answer.headers["access-control-allow-headers"].split(",")]
    assert "authorization" in allowed
