"""A circuit breaker: after repeated failures, fail fast instead of waiting on a dead peer.

closed --(``failures`` in a row)--> open --(``reset_after_s``)--> half-open: one trial call
is let through; its success closes the breaker, its failure opens it again.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CircuitBreaker:
    """Thread-safe (calls are made from worker threads)."""

    def __init__(self, failures: int = 5, reset_after_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1 or reset_after_s <= 0:
            raise ValueError("failures must be >= 1 and reset_after_s > 0")
        self._threshold = failures
        self._reset_after = reset_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def open(self) -> bool:
        with self._lock:
            return self._opened_at is not None

    def allow(self) -> bool:
        """Whether a call may go out now (closed, or the half-open trial)."""
        with self._lock:
            if self._opened_at is None:
                return True
            if not self._trial and self._clock() - self._opened_at >= self._reset_after:
                self._trial = True
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial = False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._trial or self._failures >= self._threshold:
                self._opened_at = self._clock()
                self._trial = False
