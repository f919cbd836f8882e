"""Talking to a server under test: is it answering right, and what do its metrics say.

Shared by ``make bench`` and ``make loadtest``: a server is checked with known answers
before any load, and the gateway's Prometheus counters are read around each run.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from loadtests.support.processes import Server, log, wait_until


def post_json(url: str, body: dict[str, Any], timeout: float = 60) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, {"error": err.read().decode(errors="replace")}


def validate(url: str, bodies: list[dict[str, Any]], check: Callable | None, n: int = 5) -> None:
    """Send ``n`` bodies; each must answer 200 (and pass ``check``) before load is applied."""
    for body in bodies[:n]:
        status, response = post_json(url, body)
        if status != 200:
            raise RuntimeError(f"{url} answered {status}: {str(response)[:300]}")
        problem = check(body, response) if check else None
        if problem:
            raise RuntimeError(f"{url} answered wrongly: {problem}")


PRECOMPUTED_OUTCOMES = ("hit", "miss", "fallback")


@dataclass(frozen=True)
class Counters:
    """One process's ``/metrics`` for one model at one moment (counters are cumulative)."""

    predict_ok: float
    """``tfgw_requests_total{method="predict",code="OK"}``: REST and gRPC Predicts answered."""
    batches: float
    batch_rows: float
    queue_waits: float
    queue_wait_seconds: float
    in_flight: float
    precomputed: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """``tfgw_precomputed_rows_total`` by outcome: (hit, miss, fallback) keyed rows."""

    @classmethod
    def parse(cls, text: str, model: str) -> Counters:
        """Read the Prometheus text format; a sample not exported yet counts as 0."""
        from prometheus_client.parser import text_string_to_metric_families

        values: dict[str, float] = {}
        wanted = {
            "tfgw_requests_total": {"model": model, "method": "predict", "code": "OK"},
            "tfgw_batch_size_rows_count": {"model": model},
            "tfgw_batch_size_rows_sum": {"model": model},
            "tfgw_queue_wait_seconds_count": {"model": model},
            "tfgw_queue_wait_seconds_sum": {"model": model},
            "tfgw_in_flight_requests": {},
        }
        outcomes = dict.fromkeys(PRECOMPUTED_OUTCOMES, 0.0)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = wanted.get(sample.name)
                if labels is not None and labels.items() <= sample.labels.items():
                    values[sample.name] = values.get(sample.name, 0.0) + sample.value
                elif (sample.name == "tfgw_precomputed_rows_total" and sample.labels.get("model") == model
                      and sample.labels.get("outcome") in outcomes):
                    outcomes[sample.labels["outcome"]] += sample.value
        if "tfgw_in_flight_requests" not in values:
            raise ValueError("not the gateway's metrics (no tfgw_in_flight_requests)")
        return cls(predict_ok=values.get("tfgw_requests_total", 0.0),
                   batches=values.get("tfgw_batch_size_rows_count", 0.0),
                   batch_rows=values.get("tfgw_batch_size_rows_sum", 0.0),
                   queue_waits=values.get("tfgw_queue_wait_seconds_count", 0.0),
                   queue_wait_seconds=values.get("tfgw_queue_wait_seconds_sum", 0.0),
                   in_flight=values["tfgw_in_flight_requests"],
                   precomputed=tuple(outcomes.values()))


def scrape(server: Server, model: str) -> Counters:
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        return Counters.parse(response.read().decode(), model)


def settle(servers: Sequence[Server], model: str, timeout: float = 10.0) -> list[Counters]:
    """The servers' counters once nothing is in flight (wrk leaves requests behind when it
    stops; the servers still answer them and count them), or after ``timeout`` as they are.

    Servers are scraped one after another, so one idle round is not enough: a request can
    pass from a front (scraped later) to its upstream (scraped earlier) in between. Two
    idle rounds in a row with the same counters are.
    """
    def idle() -> list[Counters] | None:
        first = [scrape(s, model) for s in servers]
        if any(c.in_flight for c in first):
            return None
        second = [scrape(s, model) for s in servers]
        return second if second == first else None

    try:
        return wait_until(idle, timeout, "nothing in flight", interval=0.05)
    except TimeoutError:
        counters = [scrape(s, model) for s in servers]
        log(f"still in flight after {timeout:.0f} s: "
            f"{', '.join(f'{s.name} {c.in_flight:.0f}' for s, c in zip(servers, counters, strict=True))}")
        return counters
