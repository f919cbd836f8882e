"""The protocol-free core: what REST and gRPC adapters delegate to.

It owns the model registry, the batchers' shared execution slots and threads, request
accounting (in-flight, outcomes, rejections) and the drain on shutdown. Inputs and
outputs are numpy tensors and TF Serving protos; no HTTP or gRPC types appear here.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

import numpy as np
from google.protobuf import struct_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from serving.batching.batcher import Batcher, RunFn
from serving.batching.rows import Tensors
from serving.core.registry import ModelRegistry, Servable
from serving.core.repository import Repository
from serving.core.results import Classifications, classifications, regressions
from serving.core.sources import LocalSource, ModelSource
from serving.errors import (
    Cancelled,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    ResourceExhausted,
    ServingError,
    Unavailable,
)
from serving.metrics import Metrics
from serving.precomputed import open_store
from serving.precomputed.lookup import FALLBACK, HIT, KEYS, MISS, OUTCOMES, Lookups, key_column
from serving.runtime.choice import RunnerChoice
from serving.runtime.parallelism import session_config
from serving.runtime.signature import CLASSIFY, REGRESS, SignatureSpec
from serving.settings import ModelConfig, Settings
from serving.tfs_config import ConfigError, read_model_config_file

log = logging.getLogger(__name__)

SIGNATURE_DEF = "signature_def"  # TF Serving's one metadata field
RUNNER = "runner"  # this gateway's own, answered only to clients that ask for it

_REJECTION_REASONS = {
    ResourceExhausted: "queue_full",
    DeadlineExceeded: "deadline",
    Cancelled: "cancelled",
    PayloadTooLarge: "too_large",
    InvalidArgument: "invalid_argument",
    NotFound: "not_found",
    Unavailable: "unavailable",
}


#: TF Serving's ``API`` label of request_latency, per entrypoint and our method name:
#: its REST handler uses the URL's verb, its gRPC service the RPC's name; it counts
#: MultiInference in neither request_count nor request_latency. ``infer`` is the Open
#: Inference Protocol's (REST ``.../infer``, gRPC ``ModelInfer``), by the same convention.
_TFS_API = {
    "REST": {"predict": "predict", "classify": "classify", "regress": "regress", "infer": "infer"},
    "GRPC": {"predict": "Predict", "classify": "Classify", "regress": "Regress", "infer": "ModelInfer"},
}
#: The ``api`` label of ``tfgw_requests_total`` / ``tfgw_request_duration_seconds``: which
#: protocol a method belongs to (every method not listed is TF Serving's).
_API = {"infer": "v2"}
TFSERVING_API = "tfserving"


class InferenceService:
    """Model lookup, validated and batched inference, status and metadata."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        batching = settings.batching
        self._executor = ThreadPoolExecutor(batching.num_batch_threads,
                                            thread_name_prefix=batching.thread_pool_name)
        self._runtime = "TF1" if settings.upstream is None else "upstream"  # runtime_latency's label
        self._slots = asyncio.Semaphore(batching.num_batch_threads)
        if settings.enable_batching:
            sizes = batching.allowed_batch_sizes or (1, batching.execution_batch_size)
        else:
            sizes = (1,)
        self.registry = ModelRegistry(
            settings.models, self._make_batcher, _source(settings, tuple(sizes), self._moved_to_session),
            load_retries=settings.max_num_load_retries,
            load_retry_interval_s=settings.load_retry_interval_micros / 1e6,
            on_retry_loaded=_refreeze)
        self.repository = Repository(self)
        """The Open Inference Protocol's model repository extension (index, load, unload)."""
        self.draining = False
        self.failure: str | None = None
        """Why the process can no longer serve (``fail``), or None."""
        self._in_flight = 0
        metrics.in_flight.set_function(lambda: self._in_flight)  # read at scrape, not kept per request
        self._idle = asyncio.Event()
        self._loading: asyncio.Task | None = None
        self._poller: asyncio.Task | None = None
        self._lookups: Lookups | None = None  # the prediction store, between start and stop
        self._loop: asyncio.AbstractEventLoop | None = None  # the serving loop, from start
        metrics.watch_runners(self._runner_labels)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the prediction store, if any (no I/O: a store that is down is fallen back
        from, not waited for); begin loading models in the background; /readyz turns true
        when they are warm."""
        store_url = self.settings.prediction_store
        if store_url is not None:
            timeout_s = self.settings.prediction_store_timeout_ms / 1000
            self._lookups = Lookups(open_store(store_url.get_secret_value(), timeout_s=timeout_s),
                                    timeout_s=timeout_s,
                                    threads=2 * self.settings.batching.num_batch_threads,
                                    metrics=self.metrics.for_store)
        self._loop = asyncio.get_running_loop()
        self._loading = asyncio.create_task(self._load())

    async def _load(self) -> None:
        await self.registry.load_all()
        _refreeze()
        if self._poll_period() > 0:
            self._poller = asyncio.create_task(self._poll())

    async def reload(self, configs: tuple[ModelConfig, ...] | None = None) -> None:
        """Serve exactly ``configs`` now (HandleReloadConfigRequest, config file polling);
        None: the models configured now, new versions on disk (version polling)."""
        if await self.registry.reconcile(configs):
            _refreeze()

    def _poll_period(self) -> float:
        periods = [self.settings.file_system_poll_wait_seconds]
        if self.settings.model_config_file:
            periods.append(self.settings.model_config_file_poll_wait_seconds)
        return min((p for p in periods if p > 0), default=0.0)

    async def _poll(self) -> None:
        """TF Serving's polling: new version directories, and the config file if asked."""
        config_period = self.settings.model_config_file_poll_wait_seconds
        next_config_read = time.monotonic() + config_period
        while True:
            await asyncio.sleep(self._poll_period())
            configs = None
            if self.settings.model_config_file and config_period and time.monotonic() >= next_config_read:
                next_config_read = time.monotonic() + config_period
                try:
                    configs = await asyncio.to_thread(read_model_config_file, self.settings.model_config_file)
                except ConfigError as error:
                    log.error("keeping the current models: %s", error)
            try:
                await self.reload(configs)
            except Exception:  # noqa: BLE001 - polling must survive a bad moment on disk
                log.exception("model reload failed")

    async def stop(self) -> None:
        for task in (self._loading, self._poller):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.registry.unload_all()
        self._executor.shutdown(wait=True)
        if self._lookups is not None:
            self._lookups.close()
            self._lookups = None

    def ready(self) -> bool:
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        """Why the server should not get traffic now, or None when it is ready."""
        if self.failure is not None:
            return self.failure
        if self.draining:
            return "draining"
        if not self.registry.healthy():
            return "the upstream is unavailable"
        if not self.registry.ready():
            return "models not yet available"
        return None

    def model_ready(self, name: str, version: int | None = None, label: str | None = None) -> bool:
        """Whether ``name`` (its ``version``, or the one ``label`` names; else any version)
        can answer now: that version AVAILABLE, the server neither draining nor failed.
        NotFound if the model is not configured, InvalidArgument for an unknown label (as
        ``resolve``)."""
        version = self.registry.requested(name, version, label)
        if self.draining or self.failure is not None:
            return False
        if version is None:
            return self.registry.model_ready(name)
        return version in self.versions(name)

    def versions(self, name: str) -> list[int]:
        """The AVAILABLE versions of model ``name``, ascending (the v2 metadata's
        ``versions``); NotFound if the model is not configured."""
        if name not in self.registry.configs:
            raise NotFound(f"Servable not found for request: Latest({name})")
        return [s.version for s in self.registry.available() if s.name == name]

    def fail(self, reason: str) -> None:
        """A part the process cannot serve without has failed (its gRPC server): not ready
        from now on, whatever else recovers; the process is expected to exit."""
        self.failure = reason

    def begin_drain(self) -> None:
        """Stop accepting requests; those already accepted still finish."""
        self.draining = True
        if self._in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """After begin_drain: wait until no request is in flight; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def track(self, model: str, method: str, entrypoint: str) -> _Tracked:
        """Account one request (``with service.track(...):``): refuse it while draining,
        count it, time it, label its outcome.

        ``entrypoint`` is "REST" or "GRPC", as TF Serving's metrics label it; ``method`` is
        TF Serving's verb (``predict``, ``classify``, ``regress``, ``multi_inference``) or
        ``infer`` (the Open Inference Protocol's).
        """
        label = model if model in self.registry.configs else ""
        tfs_api = _TFS_API[entrypoint].get(method)  # None: TF Serving does not count it
        if self.draining:
            self.metrics.rejections.labels(label, "draining").inc()
            if tfs_api is not None:
                self.metrics.tfs.request_count.inc(label, "UNAVAILABLE")
            raise Unavailable("The server is shutting down")
        return _Tracked(self, label, method, entrypoint, tfs_api)

    def _enter(self) -> None:
        self._in_flight += 1

    def _exit(self, label: str, method: str, entrypoint: str, tfs_api: str | None, code: str,
              elapsed: float) -> None:
        self._in_flight -= 1
        self.metrics.answered(label, method, code, elapsed, _API.get(method, TFSERVING_API))
        if tfs_api is not None:
            self.metrics.tfs.request(label, tfs_api, entrypoint, code, elapsed)
        if self.draining and self._in_flight == 0:
            self._idle.set()

    # -- inference -----------------------------------------------------------------------

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        return self.registry.resolve(name, version, label)

    def signature(self, servable: Servable, name: str) -> SignatureSpec:
        assert servable.model is not None
        return servable.model.signature(name)

    async def predict(self, servable: Servable, signature_name: str, tensors: Tensors,
                      deadline: float, keys: Sequence[object] | np.ndarray | None = None,
                      api: str = "Predict") -> Tensors:
        """The model's outputs for ``tensors``; with a prediction store, ``keys`` (one per
        instance, as the request carried them: ``--prediction_key_field``) lets instances
        whose key is stored be answered from it (``serving.precomputed.lookup``). ``api`` is
        runtime_latency's ``API`` label: ``Predict``, or ``ModelInfer`` for the Open Inference
        Protocol (both share the model's batches)."""
        spec = self.signature(servable, signature_name)
        rows = spec.validate(tensors)
        self._check_rows(rows)
        if self._lookups is None or rows is None or KEYS in spec.inputs:
            # rows None: the inputs share no instance dimension for keys to follow
            return await self._submit(servable, signature_name, api, tensors, rows, deadline)
        field = self.settings.prediction_key_field
        assert field is not None  # Settings: no store without a key field
        # Unkeyed requests carry the column too (all None), so they merge with keyed ones.
        keyed = {**tensors, KEYS: key_column(keys, rows, field)}
        outputs = await self._submit(servable, signature_name, api, keyed, rows, deadline)
        outcomes = outputs.pop(OUTCOMES)
        if keys is not None:
            counts = np.bincount(outcomes, minlength=4)
            self.metrics.precomputed(servable.name, int(counts[HIT]), int(counts[MISS]),
                                     int(counts[FALLBACK]))
        return outputs

    async def classify(self, servable: Servable, signature_name: str, examples: list[bytes],
                       deadline: float) -> Classifications:
        outputs = await self._run_examples(servable, signature_name, CLASSIFY, examples, deadline)
        return classifications(outputs, len(examples))

    async def regress(self, servable: Servable, signature_name: str, examples: list[bytes],
                      deadline: float) -> np.ndarray:
        outputs = await self._run_examples(servable, signature_name, REGRESS, examples, deadline)
        return regressions(outputs, len(examples))

    async def _run_examples(self, servable: Servable, signature_name: str, method: str,
                            examples: list[bytes], deadline: float) -> Tensors:
        spec = self.signature(servable, signature_name)
        if spec.method_name != method:
            kind = "classification" if method == CLASSIFY else "regression"
            raise InvalidArgument(
                f"Expected {kind} signature method_name to be {method}. Was: {spec.method_name}"
            )
        if len(spec.inputs) != 1:
            # The declared dtype is not checked: TF Serving feeds serialized Examples to the
            # one input whatever it declares (its half_plus_three test model declares DT_FLOAT).
            raise InvalidArgument(f"Signature '{signature_name}' must have one input, for serialized tf.Examples")
        self._check_rows(len(examples))
        key = next(iter(spec.inputs))
        tensors = {key: np.array(examples, dtype=object)}
        api = "Classify" if method == CLASSIFY else "Regress"
        return await self._submit(servable, signature_name, api, tensors, len(examples), deadline)

    async def _submit(self, servable: Servable, signature_name: str, api: str, tensors: Tensors,
                      rows: int | None, deadline: float) -> Tensors:
        """Through the batcher; timed as TF Serving's runtime_latency (its session Run, which
        with batching includes the batch queue), successful calls only, as TF Serving."""
        started = time.perf_counter()
        outputs = await self._batcher(servable, signature_name).submit(tensors, rows, deadline)
        self.metrics.tfs.runtime(servable.name, api, self._runtime, time.perf_counter() - started)
        return outputs

    def _check_rows(self, rows: int | None) -> None:
        if rows is not None and rows > self.settings.max_rows_per_request:
            raise PayloadTooLarge(
                f"Request has {rows} rows; the limit is {self.settings.max_rows_per_request}"
            )
        if rows == 0:
            raise InvalidArgument("Request has no rows")

    def _batcher(self, servable: Servable, signature_name: str) -> Batcher:
        return self.registry.batcher(servable, signature_name)

    def _make_batcher(self, servable: Servable, signature_name: str) -> Batcher:
        batching = self.settings.batching
        model = servable.model
        assert model is not None
        allowed = batching.allowed_batch_sizes if self.settings.enable_batching else ()

        def run(tensors: Tensors, deadline: float) -> Tensors:
            return model.run(signature_name, tensors, deadline)

        batch_run: RunFn = run
        if self._lookups is not None:  # the store answers what it can of each batch
            batch_run = self._lookups.wrap(run, model=servable.name, version=servable.version,
                                           spec=model.signature(signature_name),
                                           allowed_batch_sizes=allowed)
        return Batcher(
            batch_run,
            slots=self._slots,
            executor=self._executor,
            max_batch_size=batching.execution_batch_size,
            batch_timeout_s=batching.batch_timeout_micros / 1e6 if self.settings.enable_batching else 0.0,
            max_queued_rows=batching.max_enqueued_batches * batching.execution_batch_size,
            allowed_batch_sizes=allowed,
            max_request_rows=batching.max_request_rows if self.settings.enable_batching else None,
            merge=self.settings.enable_batching,
            metrics=self.metrics.for_model(
                servable.name,
                thread_pool_name=batching.thread_pool_name if self.settings.enable_batching else None),
        )

    # -- status and metadata -------------------------------------------------------------

    def model_status(self, name: str, version: int | None = None) -> get_model_status_pb2.GetModelStatusResponse:
        response = get_model_status_pb2.GetModelStatusResponse()
        for servable in self.registry.statuses(name, version):
            entry = response.model_version_status.add()
            entry.version = servable.version
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(servable.state.value)
            entry.status.SetInParent()  # TF Serving always reports a status, OK included
            if servable.error:
                entry.status.error_code = 2  # UNKNOWN: the version failed to load
                entry.status.error_message = servable.error
        return response

    def model_metadata(self, servable: Servable, fields: Sequence[str] = (SIGNATURE_DEF,)
                       ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """TF Serving's metadata (``signature_def``) and, only when asked for, this gateway's
        ``runner`` field (a ``google.protobuf.Struct``: the version's runner, evidence,
        state and reason), so TF Serving's clients see TF Serving's answer."""
        model = servable.model
        assert model is not None
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        if SIGNATURE_DEF in fields:
            signatures = get_model_metadata_pb2.SignatureDefMap()
            for key, signature_def in model.signature_defs.items():
                signatures.signature_def[key].CopyFrom(signature_def)
            response.metadata[SIGNATURE_DEF].Pack(signatures)
        if RUNNER in fields:
            runner = struct_pb2.Struct()
            runner.update(runner_fields(model.choice))
            response.metadata[RUNNER].Pack(runner)
        return response

    def runners(self) -> list[tuple[Servable, RunnerChoice]]:
        """Which runner serves each AVAILABLE version, and why (the ``/runners`` route)."""
        return [(s, s.model.choice) for s in self.registry.available() if s.model is not None]

    def _runner_labels(self) -> list[tuple[str, str, str, str, str]]:
        """``tfgw_model_runner_info``'s labels, read at scrape time."""
        return [(s.name, str(s.version), c.runner, str(c.evidence), c.state) for s, c in self.runners()]

    def _moved_to_session(self) -> None:
        """A version moved to a Session after its live calls (on the comparison's thread):
        refreeze, so that its TF2 functions, in the collector's frozen generation since the
        load, can be collected."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(_refreeze)


class _Tracked:
    """One request between ``track`` and its answer: a plain context manager (no generator)
    since every request passes through it."""

    __slots__ = ("_service", "_label", "_method", "_entrypoint", "_tfs_api", "_started")

    def __init__(self, service: InferenceService, label: str, method: str, entrypoint: str,
                 tfs_api: str | None) -> None:
        self._service = service
        self._label = label
        self._method = method
        self._entrypoint = entrypoint
        self._tfs_api = tfs_api
        self._started = 0.0

    def __enter__(self) -> None:
        self._service._enter()
        self._started = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 _tb: TracebackType | None) -> None:
        elapsed = time.perf_counter() - self._started
        code = "OK"
        if kind is not None:
            reason = None
            if isinstance(error, ServingError):
                code = error.grpc_code
                reason = next((r for t, r in _REJECTION_REASONS.items() if isinstance(error, t)), None)
            elif isinstance(error, asyncio.CancelledError):
                code, reason = "CANCELLED", "cancelled"
            elif isinstance(error, Exception):
                code = "INTERNAL"
            if reason:
                self._service.metrics.rejections.labels(self._label, reason).inc()
        self._service._exit(self._label, self._method, self._entrypoint, self._tfs_api, code,
                            elapsed)


def _source(settings: Settings, warmup_batch_sizes: tuple[int, ...], on_moved: Callable[[], None]) -> ModelSource:
    if settings.upstream is None:
        return LocalSource(warmup_batch_sizes, settings.tf2_session, settings.tf2_session_live_calls, on_moved,
                           direct_call=settings.tf_session_direct_call,
                           session_config=session_config(*settings.op_parallelism))
    from serving.upstream.client import UpstreamClient
    from serving.upstream.source import UpstreamSource

    return UpstreamSource(UpstreamClient(settings.upstream, max_message_bytes=settings.max_request_bytes))


def _refreeze() -> None:
    """Move the objects alive now (TensorFlow's millions) out of the collector's sight.

    A full collection walking them stalls the event loop for ~100 ms (p99 went from 15 to
    ~200 ms under load). Unfreezing first lets an unloaded version's objects be collected.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def runner_fields(choice: RunnerChoice) -> dict[str, str]:
    """A version's runner as the ``runner`` metadata field and the ``/runners`` route show it."""
    return {"runner": choice.runner, "evidence": str(choice.evidence), "state": choice.state,
            "reason": choice.reason}


def signature_defs(response: get_model_metadata_pb2.GetModelMetadataResponse) -> get_model_metadata_pb2.SignatureDefMap:
    """Unpack the SignatureDefMap of a metadata response."""
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    return signatures

