"""Beam's RunInference with our SavedModel runtime: the model path of the batch and
streaming pipelines.

Elements are ``Chunk``s (``batch.chunks``): many rows in columnar form (one numpy array per
signature input) plus whatever each row must carry through (its key or its input). Moving
rows in chunks keeps Python work per row tiny; the model runs once per chunk. A chunk whose call fails is
bisected so only the failing rows are returned as failures, each with its reason.

The loaded model is also held in a process-level cache: Beam's local runner re-creates
DoFns per bundle in streaming, and would otherwise reload the model every bundle. The cache
holds one version per location: when a newer version takes over an unpinned location, the
version it served before is evicted (and, for a ``gs://`` or ``s3://`` base path, its local
copy removed once no handler holds it).
"""
from __future__ import annotations

import bisect
import dataclasses
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from apache_beam.ml.inference.base import ModelHandler

from batch.chunks import Chunk, ChunkResult
from serving.batching.rows import Tensors, concat, merge_key, slice_rows
from serving.errors import ServingError
from serving.runtime.versions import version_dirs

log = logging.getLogger(__name__)

_MODELS: dict[Any, tuple[int, Any]] = {}
"""ModelLocation -> (version, model) it serves now: one version per location."""
_LOCK = threading.Lock()


def resolve_version(base_path: str, version: int | None = None) -> tuple[int, str]:
    """(version, directory) under ``base_path`` (local, ``gs://`` or ``s3://``): ``version``,
    or the newest.

    Called on workers, never while a pipeline is built, so building a Dataflow job touches
    nothing on ``gs://``.
    """
    found = version_dirs(base_path)
    if not found:
        raise FileNotFoundError(f"no numeric version directories under {base_path}")
    chosen = max(found) if version is None else version
    if chosen not in found:
        raise FileNotFoundError(f"no version {chosen} under {base_path}")
    return chosen, found[chosen]


@dataclass(frozen=True)
class ModelLocation:
    """Where a pipeline's model is: SavedModels under ``base_path`` (loaded in the worker),
    or a TF Serving PredictionService at ``service`` (the "microservice" approach)."""

    base_path: str | None = None
    service: str | None = None
    model_name: str = "default"
    version: int | None = None  # None: the newest
    tf2_session: bool = True  # move a TF2 model to a TF1 Session if its warm-up is answered alike there
    tf_session_direct_call: bool = True  # the gateway's --tf_session_direct_call

    def __post_init__(self) -> None:
        if (self.base_path is None) == (self.service is None):
            raise ValueError("give exactly one of a model base path and a prediction service")


def open_model(location: ModelLocation) -> tuple[int, Any]:
    """(version, model) for ``location``, loaded once per process."""
    with _LOCK:
        if location not in _MODELS:
            _MODELS[location] = _open(location)
        return _MODELS[location]


def open_newer(location: ModelLocation, version: int) -> tuple[int, Any]:
    """(version, model) the unpinned ``location`` serves from now on: ``version``, loaded
    once per process, unless a newer one already serves. The version it replaces is evicted
    from the cache (handlers still running it keep it alive until they move on)."""
    with _LOCK:
        current = _MODELS.get(location)
        if current is None or current[0] < version:
            _MODELS[location] = _open(dataclasses.replace(location, version=version))
            if current is not None:
                log.info("version %d of %s replaced by %d: evicted", current[0],
                         location.base_path or location.service, version)
        return _MODELS[location]


def cached_versions() -> dict[Any, int]:
    """ModelLocation -> the version the process-level cache holds for it."""
    with _LOCK:
        return {location: version for location, (version, _) in _MODELS.items()}


def _open(location: ModelLocation) -> tuple[int, Any]:
    if location.service is not None:
        from tensorflow_serving.apis import get_model_status_pb2

        from serving.upstream.client import UpstreamClient
        from serving.upstream.source import UpstreamModel

        client = UpstreamClient(location.service, max_message_bytes=1 << 30)
        status = client.status(location.model_name, timeout_s=30)
        available = [s.version for s in status.model_version_status
                     if s.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE]
        version = location.version if location.version is not None else max(available, default=None)
        if version is None or version not in available:
            raise FileNotFoundError(f"{location.service} serves no version {location.version or ''} "
                                    f"of {location.model_name}")
        return version, UpstreamModel(client, location.model_name, version,
                                      client.metadata(location.model_name, version, timeout_s=30))
    from serving.runtime import savedmodel

    assert location.base_path is not None
    version, path = resolve_version(location.base_path, location.version)
    model = savedmodel.load(path, direct_call=location.tf_session_direct_call)
    if location.tf2_session:  # no live traffic to split here: decided at load, on the warm-up requests
        from serving.runtime import warmup

        model.prefer_session(*warmup.requests_for(model, (1, 8)))
    log.info("%s version %d %s", location.base_path, version, model.choice)
    return version, model


@dataclass(frozen=True)
class VersionedModel:
    """What the handler loads: the model and its version (kept together, since Beam may run
    inference through another copy of the handler than the one that loaded the model)."""

    version: int
    model: Any


class SavedModelHandler(ModelHandler[Chunk, ChunkResult, VersionedModel]):
    """Runs chunks through a SavedModel version, loaded in the worker with
    ``tf.saved_model.load``, or served by a PredictionService (see ``ModelLocation``)."""

    def __init__(self, location: ModelLocation, signature_name: str = "serving_default",
                 chunks_per_call: int = 1, max_wait_s: float | None = None,
                 refresh_s: float | None = None) -> None:
        """``chunks_per_call`` chunks (e.g. messages) may share one model call; in streaming,
        ``max_wait_s`` bounds how long Beam holds one back to form that batch, and every
        ``refresh_s`` the base path is checked for a newer version, which then serves
        (unless a version is pinned). Beam's WatchFilePattern side input would do this, but
        its Watch transform does not run on the local streaming runner."""
        self._location = location
        self._signature = signature_name
        self._chunks_per_call = chunks_per_call
        self._max_wait_s = max_wait_s
        self._refresh_s = refresh_s if location.base_path and location.version is None else None
        self._next_check = 0.0
        self._newer: VersionedModel | None = None

    def load_model(self) -> VersionedModel:
        version, model = open_model(self._location)
        model.signature(self._signature)  # fail at load, not per chunk
        return VersionedModel(version, model)

    def run_inference(self, batch: Sequence[Chunk], model: VersionedModel,
                      inference_args: dict[str, Any] | None = None) -> Iterable[ChunkResult]:
        """One model call for all chunks of the batch whose row shapes agree (minibatching
        across elements, e.g. Pub/Sub messages); each chunk gets its own result back."""
        model = self._freshest(model)
        groups: dict[Any, list[Chunk]] = {}
        for chunk in batch:
            groups.setdefault(merge_key(chunk.tensors), []).append(chunk)
        results: dict[int, ChunkResult] = {}
        for chunks in groups.values():
            merged = chunks[0] if len(chunks) == 1 else Chunk(
                concat([c.tensors for c in chunks]), [p for c in chunks for p in c.passthrough])
            whole = self._run_chunk(merged, model)
            start = 0
            for chunk in chunks:
                results[id(chunk)] = _part(whole, chunk, start)
                start += len(chunk)
        return [results[id(chunk)] for chunk in batch]

    def _freshest(self, model: VersionedModel) -> VersionedModel:
        if self._refresh_s is None:
            return model
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self._refresh_s
            assert self._location.base_path is not None
            latest, _ = resolve_version(self._location.base_path)
            current = max(model.version, self._newer.version if self._newer else 0)
            if latest > current:
                version, loaded = open_newer(self._location, latest)
                log.info("serving version %d from %s", version, self._location.base_path)
                self._newer = VersionedModel(version, loaded)
        return self._newer if self._newer and self._newer.version > model.version else model

    def _run_chunk(self, chunk: Chunk, versioned: VersionedModel) -> ChunkResult:
        model = versioned.model
        ok: list[int] = []
        failures: list[tuple[int, str]] = []
        parts: list[tuple[int, Tensors]] = []
        pending = [(0, len(chunk))]
        while pending:
            start, stop = pending.pop()
            try:
                parts.append((start, model.run(self._signature, slice_rows(chunk.tensors, start, stop))))
                ok.extend(range(start, stop))
            except ServingError as error:
                if stop - start == 1:
                    failures.append((start, error.message))
                else:
                    middle = (start + stop) // 2
                    pending += [(middle, stop), (start, middle)]
        parts.sort(key=lambda p: p[0])
        outputs = concat([p for _, p in parts]) if parts else None
        ok.sort()
        return ChunkResult(chunk, outputs, ok, sorted(failures), versioned.version)

    def batch_elements_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"min_batch_size": 1, "max_batch_size": self._chunks_per_call}
        if self._max_wait_s is not None:
            kwargs["max_batch_duration_secs"] = self._max_wait_s
        return kwargs

    def get_num_bytes(self, batch: Sequence[Chunk]) -> int:
        return sum(sum(t.nbytes for t in c.tensors.values()) for c in batch)

    def get_metrics_namespace(self) -> str:
        return "tfgw_savedmodel"

    def share_model_across_processes(self) -> bool:
        return False


def _part(whole: ChunkResult, chunk: Chunk, start: int) -> ChunkResult:
    """The share of a merged result that belongs to ``chunk`` (rows ``start:start+len``)."""
    stop = start + len(chunk)
    first, last = bisect.bisect_left(whole.ok_rows, start), bisect.bisect_left(whole.ok_rows, stop)
    outputs = None if whole.outputs is None or first == last else slice_rows(whole.outputs, first, last)
    ok = [row - start for row in whole.ok_rows[first:last]]
    failures = [(row - start, reason) for row, reason in whole.failures if start <= row < stop]
    return ChunkResult(chunk, outputs, ok, failures, whole.model_version)
