"""The FastAPI options the gateway's app is built with.

FastAPI's native OpenTelemetry bridge asks OpenTelemetry on every request whether a provider
is configured (environment lookups, about 10 µs a request); the gateway exports Prometheus
metrics and configures no OpenTelemetry, so it is switched off. The benchmark's no-op
baseline (``loadtests/baselines/noop_server.py``) uses these options too, so it stays the
ceiling of what the gateway's framework can do.
"""
from __future__ import annotations

from typing import Any

NO_TELEMETRY = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
FASTAPI_OPTIONS: dict[str, Any] = dict(docs_url=None, redoc_url=None, openapi_url=None,
                                       telemetry=NO_TELEMETRY)
"""No generated docs (the API is TF Serving's), no per-request telemetry checks."""
