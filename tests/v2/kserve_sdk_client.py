"""The kserve SDK's own Open Inference Protocol clients against a running gateway: what a KServe
user's code sees. It runs in the SDK's venv (``make kserve-venv``), never in ours: kserve's pins
are not ours, and its generated ``inference.*`` protos cannot share a process with
tritonclient's. ``tests/v2/test_kserve_sdk.py`` starts the gateway, runs this script and
checks its answers.

Reads one JSON object on stdin: ``rest`` (base URL), ``grpc`` (host:port), ``unknown`` (a model
the gateway does not serve) and ``models``, model name -> input name -> tensor. Prints one JSON
object: health and readiness, gRPC model metadata (read with the SDK's generated stub: neither
client has a metadata call), every inference (with the REST answer's
``Content-Type``) and the errors for the unknown model. A tensor is
``{"datatype", "shape", "values"}``, BYTES values base64.
"""
from __future__ import annotations

import asyncio
import base64
import json
import sys

import grpc
import httpx
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from kserve.utils.numpy_codec import to_np_dtype

VARIANTS = ("rest-json", "rest-binary", "grpc-typed", "grpc-raw")
"""JSON tensors and the binary extension over REST; typed contents and raw contents over gRPC."""


def array(tensor: dict) -> np.ndarray:
    if tensor["datatype"] == "BYTES":
        values = np.empty(len(tensor["values"]), dtype=object)
        values[:] = [base64.b64decode(v) for v in tensor["values"]]
    else:
        values = np.array(tensor["values"], dtype=to_np_dtype(tensor["datatype"]))
    return values.reshape(tensor["shape"])


def tensor(datatype: str, values: np.ndarray) -> dict:
    flat = values.ravel().tolist()
    if datatype == "BYTES":
        flat = [base64.b64encode(v.encode() if isinstance(v, str) else v).decode() for v in flat]
    return {"datatype": datatype, "shape": list(values.shape), "values": flat}


def utf8(inputs: dict) -> bool:
    """Whether every BYTES value is UTF-8 text (JSON tensors carry nothing else)."""
    try:
        for spec in inputs.values():
            if spec["datatype"] == "BYTES":
                [base64.b64decode(v).decode() for v in spec["values"]]
    except UnicodeDecodeError:
        return False
    return True


def request(model: str, inputs: dict, variant: str) -> InferRequest:
    tensors = []
    for name, spec in inputs.items():
        infer_input = InferInput(name, spec["shape"], spec["datatype"])
        if variant == "grpc-typed" and spec["datatype"] == "BYTES":
            infer_input.data = array(spec).ravel().tolist()  # bytes as they are: no UTF-8 step
        else:
            infer_input.set_data_from_numpy(array(spec), binary_data=variant in ("rest-binary", "grpc-raw"))
        tensors.append(infer_input)
    parameters = {"binary_data_output": True} if variant == "rest-binary" else None
    return InferRequest(model, tensors, request_id=f"kserve-sdk-{variant}", parameters=parameters)


def answer(response) -> dict:
    return {"id": response.id, "model_name": response.model_name, "model_version": response.model_version,
            "outputs": {o.name: tensor(o.datatype, o.as_numpy()) for o in response.outputs}}


async def main(job: dict) -> dict:
    result: dict = {"rest": {}, "grpc": {}, "metadata": {}, "infer": {}}
    rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    channel = grpc.aio.insecure_channel(job["grpc"])
    async with rest, InferenceGRPCClient(job["grpc"], timeout=60) as grpc_client, channel:
        base, models = job["rest"], [*job["models"], job["unknown"]]
        result["rest"] = {"live": await rest.is_server_live(base), "ready": await rest.is_server_ready(base),
                          "model_ready": {m: await rest.is_model_ready(base, m) for m in models}}
        result["grpc"] = {"live": await grpc_client.is_server_live(), "ready": await grpc_client.is_server_ready(),
                          "model_ready": {m: await grpc_client.is_model_ready(m) for m in models}}
        stub = GRPCInferenceServiceStub(channel)
        for model, inputs in job["models"].items():
            meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=60)
            result["metadata"][model] = {
                "name": meta.name, "versions": list(meta.versions), "platform": meta.platform,
                **{key: [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in tensors]
                   for key, tensors in (("inputs", meta.inputs), ("outputs", meta.outputs))}}
            for variant in VARIANTS:
                if variant == "rest-json" and not utf8(inputs):
                    continue
                infer, headers = request(model, inputs, variant), {}
                if variant.startswith("rest"):
                    response = await rest.infer(base, infer, model_name=model, response_headers=headers)
                else:
                    response = await grpc_client.infer(infer)
                result["infer"][f"{model} {variant}"] = {**answer(response),
                                                         "content_type": headers.get("content-type")}
        unknown = job["unknown"]
        some = next(iter(job["models"].values()))
        try:
            await rest.infer(base, request(unknown, some, "rest-json"), model_name=unknown)
        except httpx.HTTPStatusError as error:
            result["rest"]["error"] = {"status": error.response.status_code, "message": str(error)}
        try:
            await grpc_client.infer(request(unknown, some, "grpc-raw"))
        except grpc.RpcError as error:
            result["grpc"]["error"] = {"code": error.code().name, "details": error.details()}
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.load(sys.stdin)))))
