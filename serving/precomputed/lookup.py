"""Answering a merged batch from the prediction store; the model computes only the rest.

``InferenceService.predict`` adds each request's keys to its inputs as one more column,
``KEYS`` (a name no signature input has; None for a row without a key), so the batcher
merges, splits and pads keys with the rows they belong to, and keyed requests merge with
unkeyed ones. The batcher's run function is a ``StoreLookup``, which for each batch:

1. takes the column off and asks the store for all the batch's keys in ONE ``get_many``
   (model = the served name, version = the servable's: other versions' entries are never
   seen);
2. decodes the hits at once (``codec.decode_rows``) and checks they fit the model's outputs
   (names, dtypes, row shapes; for a signature of several outputs, also their order, known
   once the model has answered a batch);
3. calls the model on the other rows only (padded to an allowed batch size, as the batcher
   would), none if all rows hit, and puts the rows back in order, in the model's output
   order, so an answer is the same bytes as the model's;
4. hands back each row's outcome in one more output column, ``OUTCOMES``, which the service
   counts per answered request (so padding rows, which the batcher drops, are not counted).

Falling back, never failing: a store error or timeout, an entry that does not decode or does
not fit, all send the rows concerned to the model. A lookup runs in a thread of its own and
is waited for at most ``min(store timeout, half the time left before the batch's deadline
once the model's own time is set aside)``, so a slow store never costs a request its
deadline; after repeated failures a circuit breaker skips lookups for a second, so a store
that hangs costs one timeout a second, not one per batch.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from serving.batching.batcher import RunFn
from serving.batching.rows import BatchShapeError, Tensors, allowed_size, first_rows, pad_rows
from serving.errors import InvalidArgument
from serving.precomputed.api import CorruptEntry, PredictionStore, StoreError
from serving.precomputed.codec import decode_rows
from serving.precomputed.keys import store_key
from serving.runtime.signature import SignatureSpec
from serving.upstream.breaker import CircuitBreaker

log = logging.getLogger(__name__)

KEYS = "\x00tfgw:prediction_key"
"""The inputs' column of store keys. A NUL cannot start a signature's input name in practice,
and a client cannot send it: inputs are checked against the signature before it is added."""
OUTCOMES = "\x00tfgw:prediction_outcome"
"""The outputs' column of each row's outcome (int8)."""
NO_KEY, HIT, MISS, FALLBACK = 0, 1, 2, 3

BREAKER_FAILURES = 3
"""Failed lookups in a row that open the breaker: one slow answer is not an outage."""
BREAKER_RESET_S = 1.0
"""How long lookups are skipped once it is open, before one batch tries again."""
WARN_EVERY_S = 10.0
"""A store that is down fails every lookup: say so at most this often."""


class LookupMetrics(Protocol):
    """What lookups report; ``serving.metrics.StoreMetrics`` implements it per model."""

    def lookup(self, seconds: float) -> None: ...
    def failed(self, reason: str) -> None: ...


def key_column(keys: Sequence[object] | np.ndarray | None, rows: int, field: str) -> np.ndarray:
    """The ``KEYS`` column of a request of ``rows`` instances: each one's key through
    ``store_key``, or None in every row when the request has no keys. ``InvalidArgument``
    (naming ``field`` and the instance) for a key that is not a string or an integer, or
    for other than one key per instance."""
    column = np.empty(rows, dtype=object)  # all None
    if keys is None:
        return column
    if isinstance(keys, np.ndarray):
        if keys.ndim > 1 and math.prod(keys.shape[1:]) == 1:
            keys = keys.reshape(len(keys))  # a [n, 1] tensor holds one key per row too
        if keys.ndim != 1:
            raise InvalidArgument(f"Key field '{field}' must hold one key per instance, got a "
                                  f"tensor of shape {list(keys.shape)}")
    if len(keys) != rows:
        raise InvalidArgument(f"Key field '{field}' has {len(keys)} keys for {rows} instances")
    for i, key in enumerate(keys):
        try:
            column[i] = store_key(key, field)
        except InvalidArgument as error:
            raise InvalidArgument(f"{error.message} (instance {i})") from None
    return column


class Lookups:
    """The store and what every batcher's lookups share: threads to wait on with a time
    budget, the circuit breaker, rate-limited warnings. Opened at service start, closed at
    stop, after the batchers."""

    def __init__(self, store: PredictionStore, *, timeout_s: float, threads: int,
                 metrics: Callable[[str], LookupMetrics]) -> None:
        self._store = store
        self._timeout = timeout_s
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="prediction_store")
        self._breaker = CircuitBreaker(BREAKER_FAILURES, BREAKER_RESET_S)
        self._metrics = metrics
        self._warned_at = -math.inf
        self._lock = threading.Lock()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._store.close()

    def wrap(self, run: RunFn, *, model: str, version: int, spec: SignatureSpec,
             allowed_batch_sizes: tuple[int, ...]) -> StoreLookup:
        """The run function for one batcher: ``run`` (the model) behind the store."""
        return StoreLookup(self, run, model=model, version=version, spec=spec,
                           allowed_batch_sizes=allowed_batch_sizes, metrics=self._metrics(model))

    def get(self, model: str, version: int, keys: list[str], budget_s: float,
            metrics: LookupMetrics) -> list[bytes | None] | None:
        """The stored values of ``keys``, or None when the store gave no answer within
        ``min(budget_s, its timeout)``. Never raises."""
        if budget_s <= 0 or not self._breaker.allow():
            metrics.failed("skipped")
            return None
        started = time.monotonic()
        wait_s = min(budget_s, self._timeout)
        future = self._pool.submit(self._store.get_many, model, version, keys)
        try:
            values = future.result(timeout=wait_s)
            if len(values) != len(keys):
                raise StoreError(f"the store answered {len(values)} values for {len(keys)} keys")
        except TimeoutError:
            future.cancel()  # if it has not started; otherwise the store's own timeout ends it
            return self._failed(metrics, "timeout", started, f"no answer within {wait_s:.3f} s")
        except StoreError as error:
            return self._failed(metrics, "error", started, str(error))
        except Exception as error:  # noqa: BLE001 - the store must never fail a request
            return self._failed(metrics, "error", started, f"unexpectedly: {error!r}", traceback=True)
        self._breaker.success()
        metrics.lookup(time.monotonic() - started)
        return values

    def _failed(self, metrics: LookupMetrics, reason: str, started: float, detail: str,
                traceback: bool = False) -> None:
        self._breaker.failure()
        metrics.lookup(time.monotonic() - started)
        metrics.failed(reason)
        self.warn(f"prediction store lookup failed ({detail}); the model answers instead", traceback)

    def warn(self, message: str, traceback: bool = False) -> None:
        """Log ``message`` unless another was logged less than WARN_EVERY_S ago (with the
        current exception's traceback if asked)."""
        with self._lock:
            now = time.monotonic()
            if now - self._warned_at < WARN_EVERY_S:
                return
            self._warned_at = now
        log.warning("%s (said at most every %.0f s)", message, WARN_EVERY_S, exc_info=traceback)


class StoreLookup:
    """The batcher's run function for one served (model, version, signature) with a store.

    Called from the batcher's threads, one batch at a time per thread; its learned state
    (the model's output layout, its call time) is replaced whole, never updated in place.
    """

    def __init__(self, lookups: Lookups, run: RunFn, *, model: str, version: int,
                 spec: SignatureSpec, allowed_batch_sizes: tuple[int, ...],
                 metrics: LookupMetrics) -> None:
        self._lookups = lookups
        self._run = run
        self._model = model
        self._version = version
        self._spec = spec
        self._allowed = allowed_batch_sizes
        self._metrics = metrics
        self._layout: tuple[tuple[str, np.dtype], ...] | None = None
        """The model's last answer: output names in its order, and dtypes. An answer must
        list outputs in the model's order to be the same bytes, and only the model says
        which (TF1 graphs answer sorted, an upstream as its proto does): until it has
        answered once, a signature of several outputs is not served from the store; one of
        a single output needs only the signature's dtype."""
        self._model_s = 0.0
        """Smoothed seconds of a model call: set aside from a lookup's time budget."""

    def __call__(self, batch: Tensors, deadline: float) -> Tensors:
        keys = batch.get(KEYS)
        if keys is None:  # classify and regress share the batcher and carry no keys
            return self._run(batch, deadline)
        inputs = {name: tensor for name, tensor in batch.items() if name != KEYS}
        outcomes = np.zeros(len(keys), np.int8)
        asked = [i for i, key in enumerate(keys) if key is not None]
        hits, found = self._hits(keys, asked, outcomes, deadline) if asked else (None, [])
        if hits is None:
            outputs = self._call(inputs, deadline)
        else:
            outputs = self._combine(inputs, found, hits, outcomes, deadline)
        outputs[OUTCOMES] = outcomes
        return outputs

    def _hits(self, keys: np.ndarray, asked: list[int], outcomes: np.ndarray,
              deadline: float) -> tuple[Tensors | None, list[int]]:
        """The stored rows of the keys ``asked`` (rows stacked, in order) and where they go;
        marks every asked row's outcome."""
        if self._layout is None and len(self._spec.outputs) > 1:
            outcomes[asked] = FALLBACK  # the model answers first: its output order is learned
            return None, []
        budget = (deadline - time.monotonic() - self._model_s) / 2
        values = self._lookups.get(self._model, self._version, [keys[i] for i in asked], budget,
                                   self._metrics)
        if values is None:
            outcomes[asked] = FALLBACK
            return None, []
        outcomes[asked] = MISS
        found = [i for i, value in zip(asked, values) if value is not None]
        if not found:
            return None, []
        hits = self._decode([value for value in values if value is not None])
        outcomes[found] = HIT if hits is not None else FALLBACK
        return hits, found

    def _decode(self, values: list[bytes]) -> Tensors | None:
        """The rows ``values`` hold, in the model's output order; None if they do not decode
        or do not fit the model's outputs."""
        try:
            rows = decode_rows(values)
        except CorruptEntry as error:
            self._lookups.warn(f"prediction store entry of model {self._model} version "
                               f"{self._version} unusable ({error}); the model answers instead")
            return None
        outputs = self._spec.outputs
        layout = self._layout or tuple((name, spec.dtype) for name, spec in outputs.items())
        if rows.keys() != {name for name, _ in layout}:
            return self._unfit(f"outputs {sorted(rows)}, the model's {sorted(n for n, _ in layout)}")
        for name, dtype in layout:
            value, spec = rows[name], outputs.get(name)
            if value.dtype != dtype or (spec is not None and not _fits_rows(spec.shape, value.shape)):
                return self._unfit(f"output '{name}' is {value.dtype} {list(value.shape[1:])} per row")
        return {name: rows[name] for name, _ in layout}

    def _unfit(self, detail: str) -> None:
        self._lookups.warn(f"prediction store entries of model {self._model} version "
                           f"{self._version} do not fit its outputs ({detail}); the model "
                           "answers instead")

    def _combine(self, inputs: Tensors, found: list[int], hits: Tensors, outcomes: np.ndarray,
                 deadline: float) -> Tensors:
        rest = np.flatnonzero(outcomes != HIT)
        if rest.size == 0:
            return dict(hits)  # every row from the store: no model call
        answer = self._call({name: tensor[rest] for name, tensor in inputs.items()}, deadline)
        merged = _merge(len(outcomes), rest, answer, found, hits)
        if merged is None:  # the hits do not stack with this answer (an output's size varies)
            outcomes[found] = FALLBACK
            return self._call(inputs, deadline)
        return merged

    def _call(self, inputs: Tensors, deadline: float) -> Tensors:
        """The model on ``inputs``, padded to an allowed batch size and cut back."""
        rows = len(next(iter(inputs.values())))
        target = allowed_size(rows, self._allowed)
        started = time.monotonic()
        outputs = self._run(pad_rows(inputs, rows, target), deadline)
        self._model_s = 0.8 * self._model_s + 0.2 * (time.monotonic() - started)
        self._layout = tuple((name, value.dtype) for name, value in outputs.items())
        # A new dict either way (OUTCOMES is added to it); uncut, an output of the wrong
        # size reaches the batcher's own check of the batching contract.
        return first_rows(outputs, rows) if target != rows else dict(outputs)


def _fits_rows(shape: tuple[int | None, ...] | None, value: tuple[int, ...]) -> bool:
    """Whether stacked rows of shape ``value`` fit a signature output of ``shape``."""
    if shape is None:
        return True
    if len(shape) != len(value):
        return False
    return all(want is None or want == got for want, got in zip(shape[1:], value[1:]))


def _merge(rows: int, rest: np.ndarray, answer: Tensors, found: list[int],
           hits: Tensors) -> Tensors | None:
    """The model's ``answer`` for rows ``rest`` and the stored ``hits`` for rows ``found``,
    in row order and the answer's output order; None if they do not stack."""
    if answer.keys() != hits.keys():
        return None
    merged = {}
    for name, computed in answer.items():
        if computed.ndim == 0 or len(computed) != len(rest):
            raise BatchShapeError(f"output '{name}' has shape {list(computed.shape)}; "
                                  f"expected {len(rest)} rows")
        stored = hits[name]
        if stored.dtype != computed.dtype or stored.shape[1:] != computed.shape[1:]:
            return None
        column = np.empty((rows, *computed.shape[1:]), computed.dtype)
        column[rest] = computed
        column[found] = stored
        merged[name] = column
    return merged
