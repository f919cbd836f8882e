"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``) on the gateway's
gRPC port, on each gRPC server (``grpc_server``): every method through tritonclient (which
sends every input in ``raw_input_contents`` and reads ``raw_output_contents``), and through a
plain channel with our own protos for typed contents and the error codes."""
from __future__ import annotations

from functools import partial

import grpc
import numpy as np
import pytest
import tensorflow as tf
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tritonclient.utils import InferenceServerException

from serving.grpc.servicers import MAX_DETAILS_BYTES
from serving.settings import BatchingConfig, ModelConfig, Settings
from serving.v2 import datatypes, protos
from tests.conftest import Gateway, free_port, wait_until
from tests.test_tls import pki as certificates
from tests.v2 import models
from tests.v2.models import assert_readiness, served_models, x

SERVICE = "/inference.GRPCInferenceService/"
HALF_PLUS_TWO = "saved_model_half_plus_two_cpu"
Tensor = protos.ModelInferRequest.InferInputTensor


@pytest.fixture(scope="session")
def dtypes_model(tmp_path_factory):
    """A real SavedModel for the datatypes the example models lack: ``serving_default`` x FP32 ->
    half FP16, bf BF16, y FP32 (x); ``narrow`` i8 INT8, u16 UINT16, b BOOL -> sum INT32, flipped
    BOOL; ``from_half`` h FP16 -> y FP32 (2h); ``from_bf16`` bf BF16 -> y FP32 (2bf)."""
    import tensorflow as tf

    class Dtypes(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def halves(self, x):
            return {"half": tf.cast(x, tf.float16), "bf": tf.cast(x, tf.bfloat16), "y": x}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int8, name="i8"),
                                      tf.TensorSpec([None], tf.uint16, name="u16"),
                                      tf.TensorSpec([None], tf.bool, name="b")])
        def narrow(self, i8, u16, b):
            return {"sum": tf.cast(i8, tf.int32) + tf.cast(u16, tf.int32), "flipped": tf.logical_not(b)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float16, name="h")])
        def from_half(self, h):
            return {"y": tf.cast(h, tf.float32) * 2}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.bfloat16, name="bf")])
        def from_bf16(self, bf):
            return {"y": tf.cast(bf, tf.float32) * 2}

    module = Dtypes()
    base = tmp_path_factory.mktemp("dtypes") / "dtypes"
    tf.saved_model.save(module, str(base / "1"), signatures={
        "serving_default": module.halves, "narrow": module.narrow, "from_half": module.from_half,
        "from_bf16": module.from_bf16})
    return base


@pytest.fixture(scope="module")
def gateway(tfserving_dir, grpc_server, dtypes_model, held_model) -> Gateway:
    models = served_models(tfserving_dir, ModelConfig(name="dtypes", base_path=str(dtypes_model)),
                           ModelConfig(name="held", base_path=str(held_model[0])))
    settings = Settings(port=free_port(), rest_api_port=free_port(), models=models, grpc_server=grpc_server,
                        max_rows_per_request=100, enable_batching=True,
                        batching=BatchingConfig(max_batch_size=16, batch_timeout_micros=1000, num_batch_threads=1))
    with Gateway(settings) as running:
        yield running


@pytest.fixture(scope="module")
def client(gateway):
    with triton.InferenceServerClient(gateway.grpc_target) as client:
        yield client


@pytest.fixture(scope="module")
def channel(gateway):
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        yield channel


def call(channel: grpc.Channel, method: str, request, response_class=None):
    """``method`` of the service called with our protos (the response parsed with ours)."""
    response_class = response_class or getattr(protos, type(request).DESCRIPTOR.name.replace("Request", "Response"))
    stub = channel.unary_unary(SERVICE + method, request_serializer=type(request).SerializeToString,
                               response_deserializer=response_class.FromString)
    return stub(request, timeout=30)


def refused(channel: grpc.Channel, method: str, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(channel, method, request)
    return info.value.code(), info.value.details()


infer_input = partial(models.infer_input, triton)


# --- tritonclient ---------------------------------------------------------------------------

def test_health_through_tritonclient(client):
    assert_readiness(client)


def test_metadata_through_tritonclient(client):
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "tf-gateway" and "binary_tensor_data" in server["extensions"]
    model = client.get_model_metadata("two_versions", as_json=True)
    assert (model["name"], model["versions"], model["platform"]) == (
        "two_versions", ["123", "124"], "tensorflow_savedmodel")
    assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "1"]}]
    assert model["outputs"] == [{"name": "y", "datatype": "FP32", "shape": ["-1", "1"]}]
    text = client.get_model_metadata("text", "1", as_json=True)
    assert text["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": ["-1"]}]
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("nope")
    assert info.value.status() == "StatusCode.NOT_FOUND"


def test_infer_through_tritonclient(client):
    result = client.infer("half_plus_two", [infer_input("x", x(), "FP32")], request_id="r-1")
    np.testing.assert_array_equal(result.as_numpy("y"), x((3.0, 3.5, 4.0)))
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("half_plus_two", "123", "r-1")


def test_infer_bytes_and_selected_outputs_through_tritonclient(client):
    words = np.array(["ünïcode".encode(), b"", b"a b"], dtype=object)
    result = client.infer("text", [infer_input("text", words, "BYTES")],
                          outputs=[triton.InferRequestedOutput("upper")])
    assert result.as_numpy("upper").tolist() == ["ÜNÏCODE".encode(), b"", b"A B"]
    assert result.as_numpy("length") is None
    both = client.infer("text", [infer_input("text", words, "BYTES")])
    assert both.as_numpy("length").tolist() == [7, 0, 3]
    rows = np.arange(32, dtype=np.float32).reshape(2, 16)
    vec = client.infer("vec16", [infer_input("x", rows, "FP32")])
    np.testing.assert_array_equal(vec.as_numpy("total"), rows.sum(axis=1))
    np.testing.assert_array_equal(vec.as_numpy("scaled"), 2 * rows)


def test_infer_by_version_and_label_through_tritonclient(client):
    for version in ("123", "124", "stable", "canary"):
        result = client.infer("two_versions", [infer_input("x", x((2.0,)), "FP32")], model_version=version)
        np.testing.assert_array_equal(result.as_numpy("y"), x((3.0,)))
    assert client.infer("two_versions", [infer_input("x", x((2.0,)), "FP32")],
                        model_version="canary").get_response().model_version == "124"


def test_infer_errors_through_tritonclient(client):
    cases = [
        (("nope", [infer_input("x", x(), "FP32")]), "StatusCode.NOT_FOUND", "nope"),
        (("half_plus_two", [infer_input("x", x().astype(np.float64), "FP64")]), "StatusCode.INVALID_ARGUMENT",
         "FP64"),
        (("half_plus_two", [infer_input("z", x(), "FP32")]), "StatusCode.INVALID_ARGUMENT", "Missing input"),
        (("half_plus_two", [infer_input("x", np.zeros((101, 1), np.float32), "FP32")]),
         "StatusCode.INVALID_ARGUMENT", "limit is 100"),
    ]
    for (model, inputs), status, words in cases:
        with pytest.raises(InferenceServerException) as info:
            client.infer(model, inputs)
        assert (info.value.status(), words in info.value.message()) == (status, True), info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.infer("half_plus_two", [infer_input("x", x(), "FP32")], outputs=[triton.InferRequestedOutput("w")])
    assert "unexpected inference output 'w'" in info.value.message()


def test_methods_we_lack_are_unimplemented_through_tritonclient(client):
    for ask in (lambda: client.get_model_config("half_plus_two"), client.get_inference_statistics,
                client.get_system_shared_memory_status, client.get_trace_settings):
        with pytest.raises(InferenceServerException) as info:
            ask()
        assert info.value.status() == "StatusCode.UNIMPLEMENTED"


# --- our protos on a plain channel ----------------------------------------------------------

def test_typed_contents_are_answered_typed(channel):
    request = protos.ModelInferRequest(model_name="half_plus_two", inputs=[
        Tensor(name="x", datatype="FP32", shape=[3, 1], contents=protos.InferTensorContents(fp32_contents=[2, 3, 4]))])
    response = call(channel, "ModelInfer", request)
    assert not response.raw_output_contents
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("y", "FP32", [3, 1])
    assert list(output.contents.fp32_contents) == [3.0, 3.5, 4.0]
    words = protos.ModelInferRequest(model_name="text", inputs=[
        Tensor(name="text", datatype="BYTES", shape=[2], contents=protos.InferTensorContents(
            bytes_contents=[b"ab", "é".encode()]))])
    answer = {o.name: o for o in call(channel, "ModelInfer", words).outputs}
    assert list(answer["upper"].contents.bytes_contents) == [b"AB", "É".encode()]
    assert list(answer["length"].contents.int_contents) == [2, 1]


def test_raw_contents_are_answered_raw(channel):
    request = protos.ModelInferRequest(model_name="half_plus_two", inputs=[
        Tensor(name="x", datatype="FP32", shape=[2, 1])], raw_input_contents=[x((2.0, 3.0)).tobytes()])
    response = call(channel, "ModelInfer", request)
    assert not response.outputs[0].HasField("contents")
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], "<f4"), [3.0, 3.5])


def _infer(model="half_plus_two", raw=(), **fields) -> protos.ModelInferRequest:
    return protos.ModelInferRequest(model_name=model, raw_input_contents=list(raw), **fields)


FP32_X = Tensor(name="x", datatype="FP32", shape=[1, 1], contents=protos.InferTensorContents(fp32_contents=[1]))
RAW_X = Tensor(name="x", datatype="FP32", shape=[1, 1])
ONE = np.float32(1).tobytes()


@pytest.mark.parametrize("request_, code, words", [
    (_infer(inputs=[RAW_X], raw=[ONE, ONE]), "INVALID_ARGUMENT", "raw_input_contents has 2 entries for 1 inputs"),
    (_infer(inputs=[FP32_X], raw=[ONE]), "INVALID_ARGUMENT", "sets contents while the request uses raw"),
    (_infer(inputs=[RAW_X], raw=[ONE * 2]), "INVALID_ARGUMENT", "8 bytes of binary data"),
    (_infer(inputs=[Tensor(name="x", datatype="FP32", shape=[2, 1], contents=protos.InferTensorContents(
        fp32_contents=[1]))]), "INVALID_ARGUMENT", "has 1 values in contents.fp32_contents"),
    (_infer(inputs=[Tensor(name="x", datatype="FP32", shape=[1, 1], contents=protos.InferTensorContents(
        fp64_contents=[1]))]), "INVALID_ARGUMENT", "sets contents.fp64_contents"),
    (_infer(inputs=[Tensor(name="x", datatype="FP16", shape=[1, 1])], raw=[b"\0\0"]), "INVALID_ARGUMENT",
     "the model expects FP32"),
    (_infer(inputs=[Tensor(name="x", datatype="FLOAT", shape=[1, 1])], raw=[ONE]), "INVALID_ARGUMENT",
     "not one of the Open Inference Protocol's"),
    (_infer(inputs=[RAW_X, RAW_X], raw=[ONE, ONE]), "INVALID_ARGUMENT", "is given twice"),
    (_infer(inputs=[Tensor(name="x", datatype="FP32", shape=[2**40, 1])], raw=[ONE]), "INVALID_ARGUMENT",
     "rows; the limit is 100"),
    (_infer(inputs=[Tensor(name="x", datatype="FP32", shape=[-1, 1])], raw=[ONE]), "INVALID_ARGUMENT",
     "negative dimension"),
    (_infer(inputs=[]), "INVALID_ARGUMENT", "Missing input(s) ['x']"),
    (_infer(inputs=[RAW_X], raw=[ONE], parameters={"sequence_id": protos.InferParameter(int64_param=3)}),
     "INVALID_ARGUMENT", "sequence batching is not supported"),
    (_infer(inputs=[RAW_X], raw=[ONE], parameters={"signature_name": protos.InferParameter(string_param="no")}),
     "INVALID_ARGUMENT", "not found in signature def"),
    (_infer("text", inputs=[Tensor(name="text", datatype="BYTES", shape=[1])], raw=[b"\xff\xff\xff\xff"]),
     "INVALID_ARGUMENT", "claims 4294967295 bytes"),
    (_infer(inputs=[RAW_X], raw=[ONE], model_version="9"), "NOT_FOUND", "Servable not found"),
    (_infer(inputs=[RAW_X], raw=[ONE], model_version="beta"), "INVALID_ARGUMENT",
     "Unrecognized servable version label"),
], ids=["raw-count", "mixed", "raw-size", "few-values", "other-field", "datatype", "unknown-datatype", "twice",
        "rows", "negative", "no-inputs", "sequence", "signature", "bytes-prefix", "version", "label"])
def test_bad_infer_requests_get_their_code(channel, request_, code, words):
    got, details = refused(channel, "ModelInfer", request_)
    assert (got.name, words in details) == (code, True), details


def test_health_and_metadata_with_our_protos(channel):
    assert call(channel, "ServerLive", protos.ServerLiveRequest()).live
    assert call(channel, "ServerReady", protos.ServerReadyRequest()).ready
    assert not call(channel, "ModelReady", protos.ModelReadyRequest(name="nope")).ready
    meta = call(channel, "ModelMetadata", protos.ModelMetadataRequest(name="vec16"))
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("scaled", "FP32", [-1, 16]), ("total", "FP32", [-1])]
    code, details = refused(channel, "ModelMetadata", protos.ModelMetadataRequest(name="nope"))
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in details


def test_undecodable_and_unregistered_methods(channel):
    garbage = channel.unary_unary(SERVICE + "ModelInfer")
    with pytest.raises(grpc.RpcError) as info:
        garbage(b"\xff\xff\xff", timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for method in ("ModelStreamInfer", "ModelConfig", "ModelStatistics"):
        stub = channel.unary_unary(SERVICE + method)
        with pytest.raises(grpc.RpcError) as info:
            stub(b"", timeout=30)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED, method


def test_infer_is_counted_as_tf_servings_grpc_methods_are(channel, gateway):
    labels = {"model": "half_plus_two", "method": "infer", "api": "v2"}
    before = gateway.metric("tfgw_requests_total", **labels, code="OK")
    latency = {"model_name": "half_plus_two", "API": "ModelInfer", "entrypoint": "GRPC"}
    runtime = {"model_name": "half_plus_two", "API": "ModelInfer", "runtime": "TF1"}
    tfs_before = [gateway.metric(":tensorflow:serving:request_latency_count", **latency),
                  gateway.metric(":tensorflow:serving:runtime_latency_count", **runtime)]
    call(channel, "ModelInfer", _infer(inputs=[RAW_X], raw=[ONE]))
    refused(channel, "ModelInfer", _infer(inputs=[RAW_X], raw=[ONE * 2]))
    assert gateway.metric("tfgw_requests_total", **labels, code="OK") == before + 1
    assert gateway.metric("tfgw_requests_total", **labels, code="INVALID_ARGUMENT") >= 1
    assert [gateway.metric(":tensorflow:serving:request_latency_count", **latency),
            gateway.metric(":tensorflow:serving:runtime_latency_count", **runtime)] == [
        tfs_before[0] + 1, tfs_before[1] + 1]  # as TF Serving: successful calls



# --- datatypes without an example model, deadlines ----------------------------------------

def test_fp16_and_bf16_outputs_are_answered_raw_even_to_typed_requests(channel, client):
    values = [1.5, -2.25, 65504.0]
    request = _infer("dtypes", inputs=[Tensor(name="x", datatype="FP32", shape=[3], contents=protos.InferTensorContents(
        fp32_contents=values))])
    response = call(channel, "ModelInfer", request)
    assert [(o.name, o.datatype, o.HasField("contents")) for o in response.outputs] == [
        ("bf", "BF16", False), ("half", "FP16", False), ("y", "FP32", False)]
    got = dict(zip(("bf", "half", "y"), response.raw_output_contents))
    expected = np.array(values, np.float32)
    assert got["half"] == expected.astype("<f2").tobytes()
    assert got["bf"] == expected.astype(datatypes.BY_NAME["BF16"].dtype).tobytes()
    assert got["y"] == expected.tobytes()
    result = client.infer("dtypes", [infer_input("x", expected, "FP32")])
    np.testing.assert_array_equal(result.as_numpy("half"), expected.astype(np.float16))
    halves = client.infer("dtypes", [infer_input("h", np.array([0.5, 3.0], np.float16), "FP16")],
                          parameters={"signature_name": "from_half"})
    np.testing.assert_array_equal(halves.as_numpy("y"), [1.0, 6.0])


def test_narrow_integers_and_bools_in_typed_contents(channel):
    def narrow(i8, u16, b):
        return _infer("dtypes", parameters={"signature_name": protos.InferParameter(string_param="narrow")}, inputs=[
            Tensor(name="i8", datatype="INT8", shape=[len(i8)], contents=protos.InferTensorContents(int_contents=i8)),
            Tensor(name="u16", datatype="UINT16", shape=[len(u16)],
                   contents=protos.InferTensorContents(uint_contents=u16)),
            Tensor(name="b", datatype="BOOL", shape=[len(b)], contents=protos.InferTensorContents(bool_contents=b))])

    answer = {o.name: o for o in call(channel, "ModelInfer", narrow([-128, 127], [65535, 0], [True, False])).outputs}
    assert list(answer["sum"].contents.int_contents) == [65407, 127]
    assert list(answer["flipped"].contents.bool_contents) == [False, True]
    for request_, words in ((narrow([128], [0], [True]), "outside INT8's range [-128, 127]"),
                            (narrow([0], [65536], [True]), "outside UINT16's range [0, 65535]")):
        code, details = refused(channel, "ModelInfer", request_)
        assert (code, words in details) == (grpc.StatusCode.INVALID_ARGUMENT, True), details
    typed_half = _infer("dtypes", parameters={"signature_name": protos.InferParameter(string_param="from_half")},
                        inputs=[Tensor(name="h", datatype="FP16", shape=[1])])
    code, details = refused(channel, "ModelInfer", typed_half)
    assert (code, "FP16 has no typed contents" in details) == (grpc.StatusCode.INVALID_ARGUMENT, True), details


def test_the_timeout_parameter_is_the_request_deadline(client, gateway, gate):
    def held(hold: bool):
        return [infer_input("x", np.array([1.0], np.float32), "FP32"),
                infer_input("hold", np.array([int(hold)], np.int64), "INT64")]

    outcome = {}
    client.async_infer("held", held(True), lambda result, error: outcome.update(result=result, error=error),
                       client_timeout=120)
    wait_until(lambda: gate.waiting == 1, what="the held request to reach the gate")
    with pytest.raises(InferenceServerException) as info:  # waits behind it for the one slot
        client.infer("held", held(False), timeout=300_000, client_timeout=60)  # microseconds
    assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    gate.open()
    wait_until(lambda: outcome, what="the held request's answer")
    assert outcome["error"] is None
    np.testing.assert_array_equal(outcome["result"].as_numpy("y"), [2.0])


def test_a_v2_and_a_tf_serving_grpc_request_merge_into_one_batch(client, channel, gateway, gate):
    """The held call takes the one batch thread; a ModelInfer and a TF Serving Predict then
    queue behind it and run together: one batch of 2 rows."""
    def held(value: float, hold: int):
        return [infer_input("x", np.array([value], np.float32), "FP32"),
                infer_input("hold", np.array([hold], np.int64), "INT64")]

    batches = gateway.metric("tfgw_batch_size_rows_count", model="held")
    rows = gateway.metric("tfgw_batch_size_rows_sum", model="held")
    answers: dict[str, object] = {}
    client.async_infer("held", held(0.0, 1), lambda result, error: answers.update(held=(result, error)),
                       client_timeout=120)
    wait_until(lambda: gate.waiting == 1, what="the held request to reach the gate")
    client.async_infer("held", held(1.0, 0), lambda result, error: answers.update(v2=(result, error)),
                       client_timeout=120)
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = "held"
    predict.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([2.0], np.float32)))
    predict.inputs["hold"].CopyFrom(tf.make_tensor_proto(np.array([0], np.int64)))
    tfs = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict.future(predict, timeout=120)
    wait_until(lambda: gateway.metric("tfgw_queue_depth_rows", model="held") == 2, what="both requests queued")
    gate.open()
    wait_until(lambda: len(answers) == 2, what="the v2 answers")
    assert [error for _, error in answers.values()] == [None, None]
    np.testing.assert_array_equal(answers["v2"][0].as_numpy("y"), [2.0])
    np.testing.assert_array_equal(tf.make_ndarray(tfs.result().outputs["y"]), [3.0])
    assert gateway.metric("tfgw_batch_size_rows_count", model="held") == batches + 2  # the held one, the pair
    assert gateway.metric("tfgw_batch_size_rows_sum", model="held") == rows + 3

# --- TLS and bearer tokens, as for TF Serving's methods --------------------------------------

TOKEN = "v2-grpc-token"
pki = certificates  # the fixture of the TLS tests: a CA and a certificate for localhost


def test_tls_and_bearer_tokens_guard_the_v2_methods(tfserving_dir, pki):
    settings = Settings(port=free_port(), rest_api_port=free_port(), auth_tokens=(TOKEN,), ssl_config=pki.tls(),
                        models=(ModelConfig(name="half_plus_two", base_path=str(tfserving_dir / HALF_PLUS_TWO)),))
    with Gateway(settings) as gateway, triton.InferenceServerClient(
            gateway.grpc_target.replace("127.0.0.1", "localhost"), ssl=True,
            root_certificates=str(pki.path("ca.crt"))) as client:
        assert client.is_server_live() and client.is_server_ready()  # the probes need no token
        with pytest.raises(InferenceServerException) as info:
            client.infer("half_plus_two", [infer_input("x", x(), "FP32")])
        assert info.value.status() == "StatusCode.UNAUTHENTICATED"
        with pytest.raises(InferenceServerException) as info:
            client.get_model_metadata("half_plus_two", headers={"authorization": "Bearer wrong"})
        assert info.value.status() == "StatusCode.UNAUTHENTICATED"
        result = client.infer("half_plus_two", [infer_input("x", x(), "FP32")],
                              headers={"authorization": f"Bearer {TOKEN}"})
        np.testing.assert_array_equal(result.as_numpy("y"), x((3.0, 3.5, 4.0)))
        with grpc.insecure_channel(gateway.grpc_target) as plaintext:
            with pytest.raises(grpc.RpcError) as raised:
                call(plaintext, "ServerLive", protos.ServerLiveRequest())
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_refusal_quoting_a_huge_name_still_fits_a_grpc_trailer(channel):
    """Clients refuse a status over 16 KB (non-ASCII is percent-encoded, 3 bytes a byte): the
    details are cut short rather than the call failing RESOURCE_EXHAUSTED."""
    for name in ("m" * 100_000, "é" * 50_000):
        code, details = refused(channel, "ModelInfer", _infer(name, inputs=[RAW_X], raw=[ONE]))
        assert code == grpc.StatusCode.NOT_FOUND and details.startswith("Servable not found for request")
        assert details.endswith("...") and len(details.encode()) <= MAX_DETAILS_BYTES
        code, details = refused(channel, "ModelInfer", _infer(
            inputs=[RAW_X], raw=[ONE], parameters={"signature_name": protos.InferParameter(string_param=name)}))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "not found in signature def" not in details
        with pytest.raises(grpc.RpcError) as info:  # gRPC health, beside
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=name), timeout=30)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and info.value.details().endswith("...")
