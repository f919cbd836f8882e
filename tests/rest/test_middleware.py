"""Middleware an operator adds sees every request, predictions included: added with
``app.add_middleware`` (inside the app's stack) or wrapped around the app (outside it). The
gateway's fast POST path (``ModelPosts``) is itself the innermost middleware, so neither
can be skipped."""
from __future__ import annotations

import httpx
import pytest

from serving.rest.asgi import route_path
from serving.settings import ModelConfig, Settings
from tests.conftest import Gateway, free_port


class Recorder:
    """A plain ASGI middleware: records each HTTP request, refuses any carrying ``x-deny``."""

    def __init__(self, app, seen: list) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.seen.append((scope["method"], scope["path"]))
            if (b"x-deny", b"1") in scope["headers"]:
                await send({"type": "http.response.start", "status": 418, "headers": []})
                await send({"type": "http.response.body", "body": b"denied by middleware"})
                return
        await self.app(scope, receive, send)


CALLS = [
    ("POST", "/v1/models/default:predict", {"instances": [1.0]}),
    ("POST", "/v1/models/default:classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]}),
    ("POST", "/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]}),
    ("POST", "/v1/models/default/versions/123:predict", {"instances": [1.0]}),
    ("GET", "/v1/models/default", None),
    ("GET", "/v1/models/default/metadata", None),
    ("GET", "/healthz", None),
]


def _added(seen: list):
    def wrap(app):
        app.add_middleware(Recorder, seen=seen)
        return app
    return wrap


def _wrapped(seen: list):
    return lambda app: Recorder(app, seen)


@pytest.mark.parametrize("how", [_added, _wrapped], ids=["add_middleware", "wrapping the app"])
def test_a_middleware_sees_and_can_refuse_every_request(tfserving_dir, how):
    seen: list = []
    models = (ModelConfig(name="default", base_path=str(tfserving_dir / "saved_model_half_plus_two_cpu")),)
    with Gateway(Settings(port=0, rest_api_port=free_port(), models=models, enable_batching=True),
                 wrap_app=how(seen)) as gateway, httpx.Client(base_url=gateway.url, timeout=30) as client:
        seen.clear()  # readiness polls
        for method, path, body in CALLS:
            answered = client.request(method, path, json=body)
            assert answered.status_code == 200, (path, answered.text)
            denied = client.request(method, path, json=body, headers={"x-deny": "1"})
            assert (denied.status_code, denied.text) == (418, "denied by middleware"), path
        assert seen == [(method, path) for method, path, _ in CALLS for _ in range(2)]


def test_the_fast_path_matches_paths_as_the_router_does_under_a_root_path(tfserving_dir):
    """Mounted under a prefix, predictions are found by the same rule the router uses."""
    models = (ModelConfig(name="default", base_path=str(tfserving_dir / "saved_model_half_plus_two_cpu")),)

    def under_prefix(app):  # what a proxy or a parent app sets: the full path, and the root it is under
        async def call(scope, receive, send):
            if scope["type"] == "http" and scope["path"].startswith("/prefix/"):
                scope = {**scope, "root_path": "/prefix"}
            await app(scope, receive, send)
        return call

    with Gateway(Settings(port=0, rest_api_port=free_port(), models=models), wrap_app=under_prefix) as gateway:
        answer = httpx.post(gateway.url + "/prefix/v1/models/default:predict", json={"instances": [2.0]}, timeout=30)
        assert answer.json() == {"predictions": [3.0]}
        assert httpx.get(gateway.url + "/prefix/v1/models/default", timeout=30).status_code == 200


@pytest.mark.parametrize("path,root,expected", [
    ("/v1/models/m:predict", "", "/v1/models/m:predict"),
    ("/api/v1/models/m:predict", "/api", "/v1/models/m:predict"),
    ("/api", "/api", ""),
    ("/apiv1/models/m:predict", "/api", "/apiv1/models/m:predict"),
    ("/other/v1", "/api", "/other/v1"),
])
def test_route_path_is_starlettes_rule(path, root, expected):
    scope = {"type": "http", "path": path, "root_path": root}
    assert route_path(scope) == expected
    from starlette._utils import get_route_path  # the rule we follow, where Starlette keeps it

    assert get_route_path(scope) == expected
