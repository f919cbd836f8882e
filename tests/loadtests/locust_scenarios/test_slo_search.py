"""The SLO search's verdict and bisection, the load schedules and the rows mix, on their own.

The search is driven here by a server model written as a function of the offered rate (the
real runs are in test_locust_scenarios.py): it lets each rule be checked exactly.
"""
from __future__ import annotations

import pytest

from loadtests.locust_scenarios.schedules import spike, steady, step_ramp
from loadtests.locust_scenarios.slo import SearchPlan, search, verdict
from loadtests.support.payloads import RequestPool, RowsMix, check, instances, predict_body


def step(offered: float, achieved: float | None = None, errors: int = 0, p99: float | None = 10.0,
         cpu: float = 0.3, lag_p99: float = 1.0) -> dict:
    """A step's ``measured`` summary: ``achieved`` counts answers arriving within the step,
    so a server falling behind achieves less than offered with no errors at all."""
    achieved = offered if achieved is None else achieved
    requests = round(offered * 10)
    return {"requests": requests, "offered_rate": offered, "achieved_rate": achieved,
            "error_rate": errors / requests if requests else 0.0, "latency_ms": {"p99": p99},
            "generator_cpu": cpu, "lag_ms": {"p99": lag_p99}}


def test_verdict_names_the_first_rule_broken():
    assert verdict(step(1000), slo_ms=25) is None
    assert verdict(step(1000, achieved=980), slo_ms=25) is None  # exactly 98%
    assert verdict(step(1000, achieved=979), slo_ms=25).startswith("achieved 979/s < 98%")
    assert verdict(step(1000, errors=9), slo_ms=25) is None  # 0.09%
    assert verdict(step(1000, errors=10), slo_ms=25).startswith("errors 0.10%")
    assert verdict(step(1000, p99=25.0), slo_ms=25) is None
    assert verdict(step(1000, p99=25.1), slo_ms=25) == "p99 25.1 ms > SLO 25 ms"
    assert verdict(step(0), slo_ms=25) == "no requests"


def server(capacity: float, knee: float):
    """Answers everything up to ``capacity``/s; p99 within a 25 ms SLO up to ``knee``/s."""
    def measure(rate: float) -> dict:
        return step(rate, achieved=min(rate, capacity), p99=5.0 if rate <= knee else 80.0)
    return measure


@pytest.mark.parametrize("start", [100, 1234, 5000, 40000])
def test_search_brackets_then_bisects_to_the_tolerance(start):
    result = search(server(capacity=3000, knee=2400), SearchPlan(slo_ms=25, start_rate=start,
                                                                  tolerance=0.05, max_steps=20))
    assert result["max_qps"] <= 2400 < result["first_failing_rate"] <= result["max_qps"] * 1.05
    assert result["converged"] and result["steps"][0]["rate"] == min(start, 20000)
    assert result["failed_because"] == "p99 80.0 ms > SLO 25 ms"
    assert result["max_qps"] == max(s["rate"] for s in result["steps"] if s["passed"])
    assert all(s["passed"] == (s["rate"] <= 2400) for s in result["steps"])
    assert all(isinstance(s["rate"], int) for s in result["steps"])


def test_a_saturated_first_step_restarts_below_what_the_server_achieved():
    result = search(server(capacity=1000, knee=900), SearchPlan(start_rate=2000, max_steps=2))
    assert [s["rate"] for s in result["steps"]] == [2000, 900]  # 0.9 x 1000 achieved
    assert not result["converged"]
    # ... but by at most factor**2 a step: a server that answered nothing says nothing.
    dead = search(server(capacity=0, knee=0), SearchPlan(start_rate=900, factor=1.5, max_steps=3))
    assert [s["rate"] for s in dead["steps"]] == [900, 400, 178]


def test_search_stops_at_max_steps_and_at_the_rate_limits():
    assert len(search(server(3000, 2400), SearchPlan(start_rate=100, max_steps=3))["steps"]) == 3
    never = search(server(0, 0), SearchPlan(start_rate=20, min_rate=5, max_steps=50))
    assert never["max_qps"] is None and never["steps"][-1]["rate"] == 5
    always = search(server(1e9, 1e9), SearchPlan(start_rate=100, max_rate=1000, max_steps=50))
    assert always["max_qps"] == 1000 and always["first_failing_rate"] is None


@pytest.mark.parametrize("busy", [{"cpu": 0.95}, {"lag_p99": 13.0}])
def test_a_failure_with_a_busy_generator_is_flagged(busy):
    def measure(rate: float) -> dict:
        return step(rate, p99=5.0 if rate < 1000 else 80.0, **(busy if rate >= 1000 else {}))
    assert search(measure, SearchPlan(slo_ms=25, start_rate=800, max_steps=6))["generator_bound"]
    assert not search(server(3000, 2400), SearchPlan(start_rate=800))["generator_bound"]


def test_schedules_hold_their_rates_in_order():
    assert [(p.name, p.rate, p.measured) for p in steady(100, 10, 5).phases] == [
        ("warm-up", 100, False), ("steady", 100, True)]
    assert [p.rate for p in step_ramp(400, 10, 0, steps=4).phases] == [100, 200, 300, 400]
    plan = spike(1000, 10, 5)
    assert [(p.name, p.rate) for p in plan.phases] == [
        ("warm-up", 500), ("before", 500), ("spike", 1500), ("after", 500)]
    assert plan.seconds == 35 and plan.ends() == [5, 15, 25, 35] and plan.starts() == [0, 5, 15, 25]
    pooled, start = plan.measured()
    assert (pooled.rate, pooled.seconds, start) == (pytest.approx(2500 / 3), 30, 5)
    assert [plan.phase_at(t) for t in (0, 4.99, 5, 24.99, 34.99, 35)] == [0, 0, 1, 2, 3, None]


def test_rows_mix_parses_and_pools_draw_only_its_sizes():
    mix = RowsMix.parse("1:3,8:1")
    assert mix.sizes == (1, 8) and mix.weights == (0.75, 0.25) and mix.mean_rows == 2.75
    assert str(RowsMix.parse("4")) == "4:1"
    for bad in ("", "0", "1:0", "a:1", "1,1"):
        with pytest.raises(ValueError):
            RowsMix.parse(bad)
    pool = RequestPool("natality", mix, encode=predict_body)
    draws = [pool.draw() for _ in range(200)]
    assert {rows for rows, _ in draws} == {1, 8}
    assert all(len(body["instances"]) == rows for rows, body in draws)


def test_payload_check_catches_wrong_and_missing_predictions():
    body = predict_body(instances("natality", 2, seed=1))
    from serving.examples.natality import expected_weight

    right = [float(expected_weight([r["is_male"]], [r["mother_age"]], [r["plurality"]],
                                   [r["gestation_weeks"]])[0]) for r in body["instances"]]
    assert check("natality", body, {"predictions": right}) is None
    assert "not 2 predictions" in check("natality", body, {"predictions": right[:1]})
    assert "expected" in check("natality", body, {"predictions": [right[0], right[1] + 1]})
