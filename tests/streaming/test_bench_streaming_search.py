"""The streaming bench's search for the highest rate a setup holds, against a fake pipeline
that holds every rate up to its capacity."""
from __future__ import annotations

from loadtests.benchmarks.bench_streaming import CLOSE_ENOUGH, LOWEST_RATE, Stage, measure, next_rate

BOUND_MS = 500.0


class FakeRun:
    """Answers every message within 50 ms up to ``capacity`` msg/s; above it latency grows,
    and from ``drains_below`` on some messages are never answered."""

    def __init__(self, capacity: float, drains_below: float = float("inf")) -> None:
        self.capacity = capacity
        self.drains_below = drains_below
        self.tried: list[float] = []

    def stage(self, rate: float, seconds: float) -> Stage:
        self.tried.append(rate)
        sent = int(rate * seconds)
        if rate <= self.capacity:
            return Stage(rate, sent, sent, 50.0, 80.0, 0.0, 1.0)
        received = sent if rate < self.drains_below else sent // 2
        return Stage(rate, sent, received, 900.0, 2000.0, 1500.0, 1.0)


def test_doubling_from_the_highest_fixed_rate_held_then_bisecting():
    run = FakeRun(capacity=150)
    result = measure(run, 0.0, [20, 100], 1, 1, search_steps=4, p99_bound_ms=BOUND_MS)
    assert run.tried == [20, 100, 200, 150, 175, 162]
    assert (result.held, result.failed) == (150, 162)
    assert len(result.stages) == 6


def test_halving_when_no_fixed_rate_holds():
    run = FakeRun(capacity=30)
    result = measure(run, 0.0, [100], 1, 1, search_steps=3, p99_bound_ms=BOUND_MS)
    assert run.tried == [100, 50, 25, 38]
    assert (result.held, result.failed) == (25, 38)


def test_the_search_stops_once_held_and_failed_are_close_or_below_the_lowest_rate():
    assert next_rate(100, 100 * (1 + CLOSE_ENOUGH) - 1) is None
    assert next_rate(None, 2 * LOWEST_RATE - 1) is None
    run = FakeRun(capacity=100)
    result = measure(run, 0.0, [100, 105], 1, 1, search_steps=4, p99_bound_ms=BOUND_MS)
    assert run.tried == [100, 105] and (result.held, result.failed) == (100, 105)


def test_a_stage_left_unanswered_fails_and_the_search_goes_on_below_it():
    run = FakeRun(capacity=100, drains_below=150)
    result = measure(run, 0.0, [20, 200], 1, 1, search_steps=2, p99_bound_ms=BOUND_MS)
    assert run.tried == [20, 200, 110, 65]
    assert (result.held, result.failed) == (65, 110)


def test_a_rate_holds_only_with_every_answer_a_bounded_p99_and_no_growing_latency():
    assert Stage(10, 10, 10, 50, 400, 90, None).holds(BOUND_MS)
    assert not Stage(10, 10, 9, 50, 400, 90, None).holds(BOUND_MS)
    assert not Stage(10, 10, 10, 50, 600, 90, None).holds(BOUND_MS)
    assert not Stage(10, 10, 10, 50, 400, 150, None).holds(BOUND_MS)
