"""The SLO search: the highest offered rate a server sustains within a p99 latency SLO.

A step offers a steady rate (after a warm-up) and passes when the server answers at least
98% of what was offered, fewer than 0.1% of requests fail, and the p99 latency (from when
each request was due: open loop) is within the SLO. The search brackets the answer by
stepping up or down by ``factor`` from a starting rate (a good guess saves steps), then
bisects (geometric mean) until the passing and the failing rate are within ``tolerance``
of each other or ``max_steps`` are spent. Rates are whole requests per second.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MIN_ACHIEVED = 0.98
MAX_ERROR_RATE = 0.001
GENERATOR_BOUND_CPU = 0.85
GENERATOR_BOUND_LAG = 0.5
"""A failing step whose load generator used this much of its core, or sent its requests
this late (p99, as a share of the SLO), may have failed because of the generator, not the
server: the result says so."""

SATURATED_START = 0.9
"""Before any step passed, the next rate is at most this fraction of what the failing step
achieved: a saturated server's throughput is close to its capacity (but never less than
``1 / factor**2`` of the failing rate: a server that answered nothing says nothing)."""

Measure = Callable[[float], dict[str, Any]]
"""Offered rate -> the ``measured`` part of a Locust run's summary at that rate."""


def verdict(step: dict[str, Any], slo_ms: float) -> str | None:
    """None if the step meets the SLO, else why not."""
    if step["requests"] == 0:
        return "no requests"
    if step["achieved_rate"] < MIN_ACHIEVED * step["offered_rate"]:
        return (f"achieved {step['achieved_rate']:.0f}/s < {MIN_ACHIEVED:.0%} of "
                f"{step['offered_rate']:.0f}/s offered")
    if step["error_rate"] >= MAX_ERROR_RATE:
        return f"errors {step['error_rate']:.2%} >= {MAX_ERROR_RATE:.1%}"
    p99 = step["latency_ms"]["p99"]
    if p99 is None or p99 > slo_ms:
        return f"p99 {p99:.1f} ms > SLO {slo_ms:g} ms"
    return None


@dataclass(frozen=True)
class SearchPlan:
    slo_ms: float = 25.0
    start_rate: float = 500.0
    min_rate: float = 5.0
    max_rate: float = 20_000.0
    tolerance: float = 0.1
    max_steps: int = 8
    factor: float = 1.5


def search(measure: Measure, plan: SearchPlan) -> dict[str, Any]:
    """Run steps until the answer is bracketed within ``plan.tolerance``; returns every step
    and the highest passing rate (``max_qps``; None if even ``min_rate`` failed)."""
    steps: list[dict[str, Any]] = []
    passing: int | None = None
    failing: int | None = None
    low, high = math.ceil(plan.min_rate), math.floor(plan.max_rate)
    rate = min(max(round(plan.start_rate), low), high)
    while len(steps) < plan.max_steps:
        step = measure(rate)
        why = verdict(step, plan.slo_ms)
        steps.append({"rate": rate, "passed": why is None, "why": why, **step})
        if why is None:
            passing = max(passing or rate, rate)
        else:
            failing = min(failing or rate, rate)
        if passing is not None and failing is not None:
            rate = round(math.sqrt(passing * failing))
            if failing <= passing * (1 + plan.tolerance) or not passing < rate < failing:
                break
        elif passing is not None:
            if rate >= high:
                break
            rate = min(round(rate * plan.factor), high)
        else:
            if rate <= low:
                break
            rate = max(round(min(rate / plan.factor, SATURATED_START * step["achieved_rate"])),
                       round(rate / plan.factor ** 2), low)
    best = max((s for s in steps if s["passed"]), key=lambda s: s["rate"], default=None)
    bound = min((s for s in steps if not s["passed"]), key=lambda s: s["rate"], default=None)
    return {
        "slo_ms": plan.slo_ms, "max_qps": best["rate"] if best else None,
        "p99_ms_at_max": best["latency_ms"]["p99"] if best else None,
        "first_failing_rate": bound["rate"] if bound else None,
        "failed_because": bound["why"] if bound else None,
        "converged": bool(best and bound and best["rate"] < bound["rate"]
                          <= best["rate"] * (1 + plan.tolerance)),
        "generator_bound": bool(bound and _generator_busy(bound, plan.slo_ms)),
        "steps": steps,
    }


def _generator_busy(step: dict[str, Any], slo_ms: float) -> bool:
    lag = (step.get("lag_ms") or {}).get("p99")
    return ((step.get("generator_cpu") or 0) >= GENERATOR_BOUND_CPU
            or (lag is not None and lag > GENERATOR_BOUND_LAG * slo_ms))
