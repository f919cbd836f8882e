"""TF Serving's REST API as OpenAPI (``/openapi.json``, browsable at ``/docs``;
``--rest_api_docs=false`` hides both).

The model routes are plain ASGI endpoints (no pydantic model per request: the JSON is
checked against the model's own signature instead), so FastAPI cannot describe them. They
are described here: the request and answer bodies of TF Serving's REST API
(https://www.tensorflow.org/tfx/serving/api_rest) as pydantic models, and path operations
made for the schema only, never routed. What a given model accepts (input names, dtypes,
shapes) is its signature: ``GET /v1/models/{name}/metadata``.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

_B64 = ('binary values (inputs whose name ends in "_bytes", or DT_STRING values that are not '
        'UTF-8) are objects {"b64": "<base64>"}')


class PredictRequest(BaseModel):
    """Exactly one of ``instances`` (row format) and ``inputs`` (columnar format)."""

    signature_name: str | None = Field(None, description="the signature to run; default serving_default")
    instances: list[Any] | None = Field(
        None, description="row format: one entry per row, an object of named inputs or, for a "
        f"signature with one input, the value itself; {_B64}")
    inputs: dict[str, Any] | list[Any] | None = Field(
        None, description=f"columnar format: each input's whole batch by name (or the value of a "
        f"single input); {_B64}")


class PredictResponse(BaseModel):
    """``predictions`` for a row-format request, ``outputs`` for a columnar one."""

    predictions: list[Any] | None = Field(
        None, description="one entry per row: an object of named outputs, or the value of a single output")
    outputs: dict[str, Any] | list[Any] | None = Field(
        None, description="each output's whole batch by name (or the single output's value)")


class ExamplesRequest(BaseModel):
    """tf.Examples as JSON, for classify and regress signatures."""

    signature_name: str | None = Field(None, description="the signature to run; default serving_default")
    context: dict[str, Any] | None = Field(None, description="features shared by every example")
    examples: list[dict[str, Any]] = Field(
        description="one object of features per example: a number, a string or a list of "
        f"either per feature; {_B64}")


class ClassifyResponse(BaseModel):
    results: list[list[tuple[str, float]]] = Field(description="per example, (label, score) per class")


class RegressResponse(BaseModel):
    results: list[float] = Field(description="per example, its regression value")


class Status(BaseModel):
    error_code: str = Field(description='"OK", or the error\'s canonical code')
    error_message: str


class VersionStatus(BaseModel):
    version: str
    state: str = Field(description="START, LOADING, AVAILABLE, UNLOADING or END")
    status: Status


class ModelStatus(BaseModel):
    model_version_status: list[VersionStatus]


class ModelSpec(BaseModel):
    name: str
    signature_name: str
    version: str


class ModelMetadata(BaseModel):
    model_config = ConfigDict(json_schema_extra={"description": "signature_def is TF Serving's "
                                                 "SignatureDefMap as protobuf JSON"})

    model_spec: ModelSpec
    metadata: dict[str, Any] = Field(description='{"signature_def": {"signature_def": {NAME: SignatureDef}}}')


class Error(BaseModel):
    error: str = Field(description="what was wrong, in TF Serving's words where it has them")


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Error, "description": text} for status, text in (
        (400, "the body or an input does not fit the signature"),
        (401, "no accepted bearer token (with --auth_token_file)"),
        (404, "no such model, version, label or signature"),
        (413, "the body, rows or decoded tensors are over the limit"),
        (429, "the queue is full (Retry-After says when to retry)"),
        (503, "the model is not available yet, the server is draining, or the upstream is down"),
        (504, "the deadline (x-request-timeout-ms or --rest_api_timeout_in_ms) passed"),
    )
}

_TARGETS = (
    ("/v1/models/{model_name}", "the latest version"),
    ("/v1/models/{model_name}/versions/{version}", "a version by number"),
    ("/v1/models/{model_name}/labels/{label}", "a version by label"),
)


_PATH_PARAMS = {"model_name": str, "version": int, "label": str}


def _operation(path: str, body: type[BaseModel] | None) -> Callable[..., None]:
    """A function with the path's parameters (and the body) in its signature, for FastAPI to
    describe; never called: the real routes answer."""

    def never(**_: Any) -> None:
        raise NotImplementedError

    params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind)
              for name, kind in _PATH_PARAMS.items() if "{" + name + "}" in path]
    if body is not None:
        params.append(inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=body))
    never.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return never


def _documented() -> APIRouter:
    """Path operations for the schema only."""
    router = APIRouter()
    for prefix, which in _TARGETS:
        key = prefix.rsplit("/", 1)[-1].strip("{}")
        for verb, body, answer in (("predict", PredictRequest, PredictResponse),
                                   ("classify", ExamplesRequest, ClassifyResponse),
                                   ("regress", ExamplesRequest, RegressResponse)):
            path = f"{prefix}:{verb}"
            router.add_api_route(path, _operation(path, body), methods=["POST"], response_model=answer,
                                 responses=_ERRORS, summary=f"{verb.capitalize()} with {which}",
                                 tags=[verb], operation_id=f"{verb}_by_{key}")
        path = f"{prefix}/metadata"
        router.add_api_route(path, _operation(path, None), methods=["GET"], response_model=ModelMetadata,
                             responses=_ERRORS, summary=f"Signatures of {which}", tags=["metadata"],
                             operation_id=f"metadata_by_{key}")
    for prefix, which in (("/v1/models/{model_name}", "every version"), _TARGETS[1]):
        router.add_api_route(prefix, _operation(prefix, None), methods=["GET"], response_model=ModelStatus,
                             responses=_ERRORS, summary=f"Status of {which}", tags=["status"],
                             operation_id=f"status_by_{prefix.rsplit('/', 1)[-1].strip('{}')}")
    return router


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` describe TF Serving's REST API (built once, when first asked)."""
    router = _documented()

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = get_openapi(title="TF Serving REST API (tf-gateway)", version=app.version,
                                             description=__doc__.split("\n\n")[0], routes=router.routes)
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]
