"""The server users write today: FastAPI, a plain ``def`` endpoint (so it runs in
Starlette's threadpool), one model call per request, TF Serving-shaped JSON back.

``python -m loadtests.baselines.naive_server --port PORT --model_name NAME
--model_base_path DIR`` loads the newest numeric version under DIR with
``tf.saved_model.load`` and serves ``POST /v1/models/NAME:predict`` with row-form
``instances`` (objects keyed by input name, or bare values when the signature has one
input; ``{"b64": ...}`` for bytes), and ``GET /readyz``. Deliberately ordinary: no
batching, FastAPI's own JSON parsing and encoding, the same uvicorn options as the others.
"""
from __future__ import annotations

import argparse
import base64
import os
from typing import Annotated, Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import Body, FastAPI, HTTPException  # noqa: E402

from loadtests.baselines import UVICORN_OPTIONS, latest_version  # noqa: E402

SIGNATURE = "serving_default"


def _value(row: Any, name: str, single: bool) -> Any:
    named = isinstance(row, dict) and not (len(row) == 1 and "b64" in row)
    value = row[name] if named else row
    if not named and not single:
        raise HTTPException(400, "expecting objects keyed by input name")
    if isinstance(value, dict) and "b64" in value:
        return base64.b64decode(value["b64"])
    return value


def create_app(model_name: str, base_path: str) -> FastAPI:
    fn = tf.saved_model.load(latest_version(base_path)).signatures[SIGNATURE]
    _, specs = fn.structured_input_signature
    single = len(specs) == 1
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post(f"/v1/models/{model_name}:predict")
    def predict(payload: Annotated[dict, Body()]) -> dict:
        instances = payload.get("instances")
        if not isinstance(instances, list) or not instances:
            raise HTTPException(400, "'instances' must be a non-empty list")
        try:
            inputs = {name: tf.constant([_value(row, name, single) for row in instances],
                                        dtype=spec.dtype)
                      for name, spec in specs.items()}
            outputs = {name: tensor.numpy().tolist() for name, tensor in fn(**inputs).items()}
        except (KeyError, TypeError, ValueError, tf.errors.InvalidArgumentError) as err:
            raise HTTPException(400, str(err)) from None
        if len(outputs) == 1:
            return {"predictions": next(iter(outputs.values()))}
        return {"predictions": [dict(zip(outputs, row, strict=True)) for row in zip(*outputs.values(), strict=True)]}

    @app.get("/readyz")
    def readyz() -> dict:
        return {"status": "ready"}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model_name", required=True)
    parser.add_argument("--model_base_path", required=True)
    args = parser.parse_args(argv)
    app = create_app(args.model_name, args.model_base_path)
    uvicorn.run(app, host=args.host, port=args.port, **UVICORN_OPTIONS)


if __name__ == "__main__":
    main()
