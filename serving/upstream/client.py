"""The TF Serving fleet behind ``--upstream``: one gRPC channel per pod, calls routed to the
pods that serve the version asked for, retries, and a circuit breaker.

Pods. The target names the fleet, in gRPC's own syntax: ``dns:///NAME:PORT`` (a headless
Service: every address it resolves to is a pod; resolved again at each status query, so pods
come and go), ``ipv4:A:P,B:P`` or ``ipv6:[A]:P,[B]:P`` (a fixed list), or ``HOST:PORT`` (one
peer, whatever gRPC resolves it to). Each pod has its own channel, so the client knows which
versions each pod serves: during a rollout they differ.

Versions. ``status`` asks every pod at once and reports a version AVAILABLE when any pod
serves it (a pod that fails to answer keeps what it last reported). A call for version V goes
round-robin to the pods that reported V, never to one that reported the model without V (a
pod that has not answered for the model yet, say one just resolved, comes last); a pod that
answers NOT_FOUND has lost V (it is dropped from that pod's set) and the call moves on to the
next pod at once. When no pod is left that may serve V, the call asks every pod for the
model's status again (one such refresh at a time, shared by the calls waiting on it) and goes
on with the pods that serve V now; only when none does is it NOT_FOUND. All of it within the
call's deadline. It waits for one refresh, not longer: a version no pod has after it is being
dropped by the fleet (a rollback), and a call held for it would hold the unload that drains
the version's batcher.

Retries: UNAVAILABLE (nothing ran), up to ``retries`` times within the deadline: at once on
another pod serving V that this call has not tried, else on the same after an exponential
backoff (a pod that failed is tried after the others until it answers again). The breaker
opens after consecutive UNAVAILABLE / DEADLINE_EXCEEDED failures of the fleet, so requests
then fail fast with ``Unavailable`` (503) and readiness turns false; the registry's periodic
status query is the trial that closes it again when any pod answers, so recovery needs no
client traffic. Channels send keep-alive pings.
"""
from __future__ import annotations

import itertools
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.errors import DeadlineExceeded, NotFound, Unavailable, error_for_grpc_code
from serving.upstream.breaker import CircuitBreaker

log = logging.getLogger(__name__)

_BREAKING = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
_AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE


def resolve_target(target: str) -> list[str]:
    """The pods' addresses (``HOST:PORT``) a target names; DNS is looked up now."""
    for scheme in ("ipv4:", "ipv6:"):
        if target.startswith(scheme):
            return sorted({a.strip() for a in target[len(scheme):].split(",") if a.strip()})
    if target.startswith("dns:"):
        name = target[len("dns:"):]
        if name.startswith("//"):  # dns://AUTHORITY/NAME: the authority (a DNS server) is not used
            name = name[2:].partition("/")[2]
        host, port = _split_host_port(name)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return sorted({f"[{i[4][0]}]:{i[4][1]}" if i[0] == socket.AF_INET6 else f"{i[4][0]}:{i[4][1]}"
                       for i in infos})
    return [target]


def _split_host_port(name: str) -> tuple[str, int]:
    if name.startswith("["):
        host, _, rest = name[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 443
    host, sep, port = name.rpartition(":")
    return (host, int(port)) if sep else (name, 443)  # gRPC's default port for dns: targets


@dataclass
class _Pod:
    address: str
    channel: grpc.Channel
    predictions: prediction_service_pb2_grpc.PredictionServiceStub
    models: model_service_pb2_grpc.ModelServiceStub
    versions: dict[str, frozenset[int]] = field(default_factory=dict)  # model -> AVAILABLE versions
    failing: bool = False  # its last call was UNAVAILABLE: tried after the others

    def serves(self, name: str, version: int) -> bool:
        return version in self.versions.get(name, ())


class UpstreamClient:
    """Blocking calls to a TF Serving fleet, safe from many threads."""

    def __init__(self, target: str, *, max_message_bytes: int, retries: int = 2,
                 backoff_s: float = 0.05, breaker: CircuitBreaker | None = None,
                 resolve: Callable[[str], list[str]] = resolve_target) -> None:
        self.target = target
        self._options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.enable_retries", 0),  # retries are ours, bounded by the request deadline
            # a pod back after a restart is used within seconds (grpc's default backoff
            # grows to 120 s: fronts kept refusing for over a minute after an upstream restart)
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 2_000),
        ]
        self._resolve = resolve
        self._retries = retries
        self._backoff = backoff_s
        self.breaker = breaker or CircuitBreaker()
        self._lock = threading.Lock()
        self._pods: dict[str, _Pod] = {}
        self._turn = itertools.count()
        self._refreshing = threading.Lock()  # one status refresh at a time
        self._refreshes: dict[str, int] = {}  # model -> status queries done
        self._update_pods()

    @property
    def pods(self) -> list[str]:
        with self._lock:
            return sorted(self._pods)

    def close(self) -> None:
        with self._lock:
            pods, self._pods = list(self._pods.values()), {}
        for pod in pods:
            pod.channel.close()

    # -- the calls -----------------------------------------------------------------------

    def predict(self, request: predict_pb2.PredictRequest, deadline: float) -> predict_pb2.PredictResponse:
        if not self.breaker.allow():
            raise Unavailable(f"The upstream {self.target} is unavailable (circuit open)")
        return self._route("Predict", request, deadline)

    def metadata(self, name: str, version: int, timeout_s: float) -> get_model_metadata_pb2.GetModelMetadataResponse:
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = name
        request.model_spec.version.value = version
        request.metadata_field.append("signature_def")
        return self._route("GetModelMetadata", request, time.monotonic() + timeout_s)

    def status(self, name: str, timeout_s: float) -> get_model_status_pb2.GetModelStatusResponse:
        """The model's versions across the fleet: AVAILABLE where any pod serves one."""
        self._update_pods()
        return self._query_status(name, time.monotonic() + timeout_s)

    # -- status across pods --------------------------------------------------------------

    def _update_pods(self) -> None:
        try:
            addresses = set(self._resolve(self.target))
        except (OSError, ValueError) as error:
            log.warning("could not resolve the upstream %s (keeping %s): %s", self.target, self.pods, error)
            return
        with self._lock:
            gone = [self._pods.pop(a) for a in list(self._pods) if a not in addresses]
            for address in addresses - set(self._pods):
                channel = grpc.insecure_channel(address, options=self._options)
                self._pods[address] = _Pod(address, channel,
                                           prediction_service_pb2_grpc.PredictionServiceStub(channel),
                                           model_service_pb2_grpc.ModelServiceStub(channel))
        for pod in gone:
            log.info("upstream pod %s is gone", pod.address)
            pod.channel.close()

    def _query_status(self, name: str, deadline: float) -> get_model_status_pb2.GetModelStatusResponse:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        with self._lock:
            pods = list(self._pods.values())
        timeout = max(deadline - time.monotonic(), 0.001)
        calls = [(pod, pod.models.GetModelStatus.future(request, timeout=timeout)) for pod in pods]
        merged: dict[int, get_model_status_pb2.ModelVersionStatus] = {}
        answered, errors = False, []
        for pod, call in calls:
            try:
                response = call.result()
            except grpc.RpcError as error:
                code = error.code()
                errors.append((code, f"{pod.address}: {error.details()}"))
                if code == grpc.StatusCode.NOT_FOUND:  # alive, without the model
                    answered, pod.failing = True, False
                    pod.versions[name] = frozenset()
                elif code in _BREAKING:
                    pod.failing = True  # it keeps the versions it last reported
                continue
            answered, pod.failing = True, False
            pod.versions[name] = frozenset(s.version for s in response.model_version_status
                                           if s.state == _AVAILABLE)
            for entry in response.model_version_status:
                if entry.version not in merged or entry.state == _AVAILABLE:
                    merged[entry.version] = entry
        with self._lock:
            self._refreshes[name] = self._refreshes.get(name, 0) + 1
        if answered:
            self.breaker.success()
        elif not errors or all(code in _BREAKING for code, _ in errors):
            self.breaker.failure()
        if not calls:
            raise Unavailable(f"upstream {self.target}: no pods (nothing resolved)")
        if not merged and errors:
            code = next((c for c, _ in errors if c != grpc.StatusCode.NOT_FOUND), grpc.StatusCode.NOT_FOUND)
            details = "; ".join(d for _, d in errors)
            if code in _BREAKING:
                code = grpc.StatusCode.UNAVAILABLE
            raise error_for_grpc_code(code.name, f"upstream {self.target}: {details}")
        response = get_model_status_pb2.GetModelStatusResponse()
        response.model_version_status.extend(merged[v] for v in sorted(merged))
        return response

    def _refresh(self, name: str, seen: int, deadline: float) -> None:
        """Ask every pod for ``name``'s status again, unless another call did since ``seen``."""
        if not self._refreshing.acquire(timeout=max(deadline - time.monotonic(), 0)):
            return
        try:
            if self._refreshes.get(name, 0) == seen:
                try:
                    self._query_status(name, deadline)
                except (NotFound, Unavailable) as error:
                    log.info("status refresh of %s: %s", name, error)
        finally:
            self._refreshing.release()

    # -- routing -------------------------------------------------------------------------

    def _candidates(self, name: str, version: int, tries: dict[str, int]) -> list[_Pod]:
        """The pods that serve the version, then those that never answered a status query
        for the model (a pod that did and lacks the version is never one): the least tried
        first, then the ones that reported it, failing ones last, then round-robin."""
        with self._lock:
            pods = sorted(self._pods.values(), key=lambda p: p.address)
        serving = [p for p in pods if p.serves(name, version) or name not in p.versions]
        if not serving:
            return []
        start = next(self._turn) % len(serving)
        rotated = serving[start:] + serving[:start]
        return sorted(rotated, key=lambda p: (tries.get(p.address, 0), name not in p.versions, p.failing))

    def _route(self, method: str, request: Any, deadline: float) -> Any:
        name, version = request.model_spec.name, request.model_spec.version.value
        tries: dict[str, int] = {}  # pod -> calls made to it for this request
        unavailable = 0
        refreshed = False
        while True:
            seen = self._refreshes.get(name, 0)
            candidates = self._candidates(name, version, tries)
            if not candidates:
                # No pod is known to serve it (any more): ask the fleet again, once (see above).
                if refreshed:
                    raise NotFound(f"upstream {self.target}: no pod serves version {version} of {name}")
                self._refresh(name, seen, deadline)
                refreshed, tries = True, {}
                continue
            pod = candidates[0]
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise DeadlineExceeded(f"Deadline exceeded before the upstream {self.target} answered")
            tries[pod.address] = tries.get(pod.address, 0) + 1
            try:
                response = getattr(pod.predictions, method)(request, timeout=timeout)
            except grpc.RpcError as error:
                code = error.code()
                if code == grpc.StatusCode.NOT_FOUND:
                    # This pod does not (or no longer) serve the version: another may.
                    with self._lock:
                        pod.versions[name] = pod.versions.get(name, frozenset()) - {version}
                    continue
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    pod.failing = True  # CANCELLED: we never cancel, the pod went away
                    if unavailable < self._retries and (
                            any(p.address not in tries for p in self._candidates(name, version, tries))
                            or self._pause(self._backoff * (2 ** unavailable) * (0.5 + random.random()),
                                           deadline)):
                        unavailable += 1  # another pod at once, or the same after a backoff
                        continue
                    code = grpc.StatusCode.UNAVAILABLE
                if code in _BREAKING:
                    self.breaker.failure()
                raise error_for_grpc_code(code.name, f"upstream {pod.address}: {error.details()}") from None
            pod.failing = False
            self.breaker.success()
            return response

    @staticmethod
    def _pause(seconds: float, deadline: float) -> bool:
        """Sleep ``seconds`` if that ends before ``deadline``; whether it did."""
        if time.monotonic() + seconds >= deadline:
            return False
        time.sleep(seconds)
        return True
