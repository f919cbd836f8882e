"""A TF2 model's runner chosen on its first live calls, off the request path.

A model that ships no recorded warm-up file would otherwise move to a TF1 Session on
synthetic requests alone, which may mean nothing to it (empty strings for a vocabulary,
zeros for token ids). Instead it serves from its TF2 functions while its first ``calls``
model calls (a merged batch is one) are recorded with the answers the clients got; then a
thread of its own builds the Session candidate, replays them on it
(``LoadedModel.settle_live``) and moves the version or closes the candidate.

The contract, one test per clause in tests/runtime/test_live.py:

1. No answer waits for the comparison: a call is recorded by an append under a lock on
   the calling thread; the Session is built and compared on another thread.
2. Memory is bounded: at most ``calls`` calls and ``max_bytes`` of their inputs and
   answers are kept (a call that would overflow the budget is left out; the comparison
   starts with what is in once the budget is full); later calls are not observed at all.
   The candidate exists only while it is compared, one comparison at a time per process.
3. The version moves only if every signature the calls reached answered alike and none
   differently; a signature they did not prove (never called) is tried on the synthetic
   requests, as at load: all signatures move or none.
4. A difference, or TF1's loader failing, closes the candidate: the version stays on its
   functions and its choice says why.
5. A version unloaded before the decision (``LoadedModel.close``) moves nothing and its
   candidate is closed.
6. ``on_settled`` gets the final choice, on the comparison's thread, once.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from serving.runtime.choice import FUNCTIONS, Evidence, RunnerChoice
from serving.runtime.savedmodel import Answer, Call, Inputs, LoadedModel

log = logging.getLogger(__name__)

MAX_BYTES = 64 << 20
"""The most bytes of recorded inputs and answers one comparison keeps."""

_ONE_AT_A_TIME = threading.Lock()  # one Session candidate in memory at a time, whatever the versions


def watch(model: LoadedModel, calls: int, fallback: Sequence[tuple[str, Inputs]],
          on_settled: Callable[[RunnerChoice], None], max_bytes: int = MAX_BYTES) -> LiveComparison | None:
    """Start recording ``model``'s next ``calls`` calls for a live comparison (None: nothing
    to compare, a model already in a Session or ``calls`` 0). ``fallback``: the synthetic
    requests for signatures the calls leave unproven."""
    if model.in_session or calls <= 0:
        return None
    comparison = LiveComparison(model, calls, fallback, on_settled, max_bytes)
    model.choice = RunnerChoice(
        FUNCTIONS, Evidence.LIVE_REQUESTS, f"its TF2 functions serve while its first {calls} live calls are recorded, "
        "to be compared with a TF1 Session (no recorded warm-up file)", pending=True)
    model.observe_calls(comparison)
    return comparison


class LiveComparison:
    """Records a model's first calls, then compares them with a Session in the background."""

    def __init__(self, model: LoadedModel, calls: int, fallback: Sequence[tuple[str, Inputs]],
                 on_settled: Callable[[RunnerChoice], None], max_bytes: int) -> None:
        self._model = model
        self._limit = calls
        self._fallback = fallback
        self._on_settled = on_settled
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._bytes = 0
        self._recording = True
        self.thread: threading.Thread | None = None  # the comparison, once started
        self.settled = threading.Event()  # set once the final choice is recorded

    def offer(self, signature_name: str, inputs: Inputs, answer: Answer) -> None:
        """One call and its answer (None: refused), from the thread that made it."""
        size = _nbytes(inputs) + (0 if answer is None else _nbytes(answer))
        with self._lock:
            if not self._recording:
                return
            if self._bytes + size <= self._max_bytes:
                self._calls.append(Call(signature_name, dict(inputs), answer))
                self._bytes += size
                if len(self._calls) < self._limit:
                    return
            elif not self._calls:
                return  # larger than the whole budget: left out, later calls may fit
            self._recording = False
        self._model.observe_calls(None)
        self.thread = threading.Thread(target=self._compare, name="tfgw-runner-comparison", daemon=True)
        self.thread.start()

    def _compare(self) -> None:
        calls, self._calls = self._calls, []
        model = self._model
        try:
            with _ONE_AT_A_TIME:
                model.choice = dataclasses.replace(
                    model.choice, reason=f"its TF2 functions serve while its first {len(calls)} live calls are "
                    "compared with a TF1 Session")
                choice = model.settle_live(calls, self._fallback)
            del calls  # the recorded calls go before on_settled, which may collect garbage
            self._on_settled(choice)
        finally:
            self.settled.set()


def _nbytes(tensors: Mapping[str, np.ndarray]) -> int:
    """The bytes ``tensors`` hold, the contents of string tensors included."""
    total = 0
    for value in tensors.values():
        total += value.nbytes
        if value.dtype == object:
            total += sum(len(item) for item in value.ravel().tolist() if isinstance(item, (bytes, str)))
    return total
