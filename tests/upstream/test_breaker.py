"""The circuit breaker (serving/upstream/breaker.py), on an injected clock."""
from __future__ import annotations

import pytest

from serving.upstream.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_and_half_opens_after_the_reset_time():
    clock = Clock()
    breaker = CircuitBreaker(failures=3, reset_after_s=2.0, clock=clock)
    for _ in range(2):
        breaker.failure()
    assert breaker.allow() and not breaker.open
    breaker.failure()
    assert breaker.open and not breaker.allow()
    clock.now = 2.0
    assert breaker.allow()          # the one half-open trial
    assert not breaker.allow()      # and only one
    breaker.failure()               # trial failed: open again, for another reset period
    clock.now = 3.0
    assert not breaker.allow()
    clock.now = 4.0
    assert breaker.allow()
    breaker.success()
    assert not breaker.open and breaker.allow()


def test_a_success_resets_the_count():
    breaker = CircuitBreaker(failures=2, clock=Clock())
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert not breaker.open


def test_rejects_nonsense():
    with pytest.raises(ValueError):
        CircuitBreaker(failures=0)
