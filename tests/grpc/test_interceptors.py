"""``serving.grpc.interceptors`` without a server: which steps an interceptor's methods become,
in what order, and what a refusal or a fault in the admission step gives."""
from __future__ import annotations

import grpc

from serving.errors import PermissionDenied, Unauthenticated
from serving.grpc.interceptors import admission, intercepted

PATH = "/test.Service/Echo"


class Admits:
    def __init__(self, name: str, seen: list, refuse: Exception | None = None) -> None:
        self.name, self.seen, self.refuse = name, seen, refuse

    def admit(self, method: str, metadata) -> None:
        self.seen.append((self.name, method, tuple(metadata)))
        if self.refuse is not None:
            raise self.refuse


class Intercepts:
    async def intercept(self, method: str, context) -> None:
        pass


async def method(request, context):
    return request


def test_admit_steps_run_in_order_and_the_first_refusal_is_the_status():
    seen: list = []
    admit = admission(PATH, [Admits("a", seen), Intercepts(), Admits("b", seen, Unauthenticated("who?")),
                             Admits("c", seen)])
    assert admit((("k", "v"),)) == (grpc.StatusCode.UNAUTHENTICATED, "who?")
    assert seen == [("a", PATH, (("k", "v"),)), ("b", PATH, (("k", "v"),))]
    assert admission(PATH, [Admits("a", [], PermissionDenied("no"))])(()) == (grpc.StatusCode.PERMISSION_DENIED, "no")
    assert admission(PATH, [Admits("a", [])])(()) is None


def test_a_fault_in_an_admit_step_is_unknown_as_a_methods_would_be():
    assert admission(PATH, [Admits("a", [], RuntimeError("broken"))])(()) == (
        grpc.StatusCode.UNKNOWN, "Exception calling application: broken")


def test_each_step_only_from_interceptors_that_have_it():
    assert admission(PATH, [Intercepts()]) is None and admission(PATH, []) is None
    assert intercepted(method, PATH, [Admits("a", [])], streaming=False) is method
    assert intercepted(method, PATH, [Admits("a", []), Intercepts()], streaming=False) is not method
