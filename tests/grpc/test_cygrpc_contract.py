"""The private grpc internals ``serving.grpc.core_server`` drives (``grpc._cython.cygrpc``),
as it uses them: names, call signatures, constructors, and the grpcio minor they were tested
on. A grpcio upgrade that changes any of them fails here, by name, before a behaviour test
fails less clearly; ``--grpc_server=aio`` (public API only) is the fallback meanwhile."""
from __future__ import annotations

import inspect
import re
import tomllib

import grpc
import pytest
from grpc._cython import cygrpc
from packaging.requirements import Requirement

from tests.conftest import REPO

SIGNATURES = {
    (cygrpc.CompletionQueue, "poll"): "(self, deadline=None)",
    (cygrpc.CompletionQueue, "shutdown"): "(self)",
    (cygrpc.Server, "register_completion_queue"): "(self, queue)",
    (cygrpc.Server, "add_http2_port"): "(self, address, server_credentials=None)",
    (cygrpc.Server, "start"): "(self, backup_queue=True)",
    (cygrpc.Server, "request_call"): "(self, call_queue, server_queue, tag)",
    (cygrpc.Server, "shutdown"): "(self, queue, tag)",
    (cygrpc.Server, "cancel_all_calls"): "(self)",
    (cygrpc.Server, "destroy"): "(self)",
    (cygrpc.Call, "start_server_batch"): "(self, operations, tag)",
    (cygrpc.Call, "cancel"): "(self, error_code=2147483647, details=None)",
    (cygrpc.ReceiveMessageOperation, "message"): "(self)",
    (cygrpc.ReceiveCloseOnServerOperation, "cancelled"): "(self)",
}
"""Every cygrpc method core_server.py calls, with the signature it was written against."""

EVENT_ATTRIBUTES = {
    cygrpc.RequestCallEvent: ("tag", "success", "completion_type", "call", "call_details", "invocation_metadata"),
    cygrpc.BatchOperationEvent: ("tag", "success", "completion_type", "batch_operations"),
}


def test_grpcio_is_pinned_to_the_minor_installed_and_tested():
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [Requirement(d) for d in dependencies if Requirement(d).name == "grpcio"]
    match = re.fullmatch(r"==(\d+\.\d+)\.\*", str(pin.specifier))
    assert match, f"grpcio must be pinned to one minor (==X.Y.*), as core_server.py needs: {pin}"
    assert grpc.__version__.startswith(match.group(1) + "."), (grpc.__version__, str(pin))


@pytest.mark.parametrize(("owner", "name"), sorted(SIGNATURES, key=lambda k: (k[0].__name__, k[1])),
                         ids=lambda value: getattr(value, "__name__", value))
def test_each_cygrpc_method_used_has_its_signature(owner, name):
    assert str(inspect.signature(getattr(owner, name))) == SIGNATURES[owner, name]


def test_operations_build_as_core_server_builds_them():
    cygrpc.SendInitialMetadataOperation(None, 0)
    cygrpc.SendInitialMetadataOperation((("x-key", "value"), ("x-raw-bin", b"\x00")), 0)
    cygrpc.SendMessageOperation(b"answer", 0)
    cygrpc.SendStatusFromServerOperation(None, cygrpc.StatusCode.ok, b"", 0)
    cygrpc.SendStatusFromServerOperation((("x-key", "value"),), cygrpc.StatusCode.internal, b"details", 0)
    cygrpc.ReceiveMessageOperation(0)
    cygrpc.ReceiveCloseOnServerOperation(0)
    queue = cygrpc.CompletionQueue()
    server = cygrpc.Server((("grpc.max_receive_message_length", 1024),), False)
    server.register_completion_queue(queue)


def test_events_and_status_codes_have_the_names_used():
    for event, names in EVENT_ATTRIBUTES.items():
        assert [name for name in names if not hasattr(event, name)] == [], event
    assert cygrpc.CompletionType.queue_shutdown is not None
    for code in (grpc.StatusCode.OK, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
        assert getattr(cygrpc.StatusCode, code.name.lower()) == code.value[0]
    # add_secure_port hands grpc's public credentials object's cygrpc half to the C core
    assert isinstance(grpc.local_server_credentials()._credentials, cygrpc.ServerCredentials)
