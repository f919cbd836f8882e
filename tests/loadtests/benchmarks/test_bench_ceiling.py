"""``bench_ceiling``'s arithmetic and report (its servers and wrk are the ones ``make
bench`` uses, smoke-tested in test_bench_smoke.py)."""
from __future__ import annotations

from dataclasses import asdict

import pytest

from loadtests.benchmarks.bench_ceiling import Round, Side, render


def test_the_share_of_the_ceiling_is_the_ceilings_cpu_per_request_over_the_gateways():
    r = Round(noop=Side(qps=1000, errors=0, cpu_share=0.5), gateway=Side(qps=800, errors=0, cpu_share=0.5))
    assert r.noop.cpu_ms_per_request == pytest.approx(0.5)
    assert r.gateway.cpu_ms_per_request == pytest.approx(0.625)
    assert r.cpu_ratio == pytest.approx(0.8) and r.qps_ratio == pytest.approx(0.8)
    # unequal core shares: the CPU ratio is what the gateway costs, the QPS ratio is not
    r = Round(noop=Side(qps=1000, errors=0, cpu_share=0.6), gateway=Side(qps=800, errors=3, cpu_share=0.4))
    assert r.cpu_ratio == pytest.approx((0.6 / 1000) / (0.4 / 800))


def test_the_report_shows_every_round_the_median_and_the_verdict():
    rounds = [Round(Side(1000, 0, 0.5), Side(q, e, 0.5)) for q, e in ((700, 0), (800, 2), (900, 0))]
    report = {"rounds": [asdict(r) | {"cpu_ratio": r.cpu_ratio, "qps_ratio": r.qps_ratio} for r in rounds],
              "median_cpu_ratio": 0.8, "median_qps_ratio": 0.8, "goal": 0.75, "connections": 64,
              "duration": 8, "pinning": "not pinned"}
    text = render(report)
    assert text.count("\n| ") == 1 + 3  # the header and one line per round
    assert "| 2 | 1,000 | 800 (2 errors) |" in text
    assert "**0.80** of the ceiling" in text and ": met." in text
    assert ": not met." in render(report | {"median_cpu_ratio": 0.7})
