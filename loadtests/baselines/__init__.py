"""The baselines the benchmarks compare against, each run as its own process.

``raw_model``: the model alone, in process (its throughput is the limit).
``noop_server``: parses the JSON body and returns a constant (the HTTP ceiling).
``naive_server``: one model call per request in FastAPI's threadpool (today's common way).
``stock_beam``: Beam's stock per-element RunInference path.
The servers use the same uvicorn options: one worker, httptools, uvloop, no access log.
"""
from __future__ import annotations

UVICORN_OPTIONS = dict(workers=1, loop="uvloop", http="httptools", access_log=False,
                       log_level="warning", lifespan="on")
"""The uvicorn options every baseline runs with (the gateway uses the same ones)."""


def latest_version(base_path: str) -> str:
    """The newest version directory under a TF Serving base path (what TF Serving's default
    policy serves); the baselines load only that one."""
    from serving.runtime.versions import version_dirs

    versions = version_dirs(base_path)
    if not versions:
        raise FileNotFoundError(f"no numeric version directory under {base_path}")
    return versions[max(versions)]
