"""The HTTP ceiling: FastAPI on uvicorn, an endpoint that parses the JSON body and returns
a constant. Nothing the gateway does per request can make it faster than this process.

``python -m loadtests.baselines.noop_server --port PORT``; serves
``POST /v1/models/{name}:predict`` and ``GET /readyz``. Imports no TensorFlow.
"""
from __future__ import annotations

import argparse
import json

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

from loadtests.baselines import UVICORN_OPTIONS
from serving.rest.options import FASTAPI_OPTIONS

CONSTANT = b'{"predictions": [0.0]}'


def create_app() -> FastAPI:
    app = FastAPI(**FASTAPI_OPTIONS)  # the gateway's: the ceiling pays what it pays, no more

    @app.post("/v1/models/{name}:predict")
    async def predict(name: str, request: Request) -> Response:
        doc = json.loads(await request.body())
        if not isinstance(doc, dict) or "instances" not in doc:
            return Response(b'{"error": "Missing \'instances\' key"}', status_code=400,
                            media_type="application/json")
        return Response(CONSTANT, media_type="application/json")

    @app.get("/readyz")
    async def readyz() -> Response:
        return Response(b'{"status": "ready"}', media_type="application/json")

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(), host=args.host, port=args.port, **UVICORN_OPTIONS)


if __name__ == "__main__":
    main()
