"""Comparison servers for the benchmark, each run as its own process.

``noop_server``: parses the JSON body and returns a constant (the HTTP ceiling).
``naive_server``: one model call per request in FastAPI's threadpool (today's common way).
Both use the same uvicorn options: one worker, httptools, uvloop, no access log.
"""

UVICORN_OPTIONS = dict(workers=1, loop="uvloop", http="httptools", access_log=False,
                       log_level="warning", lifespan="on")
"""The uvicorn options every baseline runs with (the gateway uses the same ones)."""
