"""Raw per-request samples and the summary computed from them.

Every request the generator was scheduled to send is one sample, including those it could
not send (in-flight cap) and those unanswered when the run ended: nothing is left out of
the error rate. Percentiles are computed exactly from the samples (nearest rank: always a
latency that some request saw), not from Locust's histogram, which rounds to about two
significant digits.
"""
from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.locust_scenarios.schedules import Phase

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}


@dataclass(slots=True)
class Sample:
    phase: int
    """Index of the schedule phase the request was *scheduled* in."""
    intended_s: float
    """When it was due, seconds after the start: latency counts from here, so a generator
    that falls behind shows up as latency instead of hiding it."""
    lag_ms: float
    """Sent this late: the generator was busy (0 for requests it never sent)."""
    latency_ms: float
    """Due until answered: what a user arriving at ``intended_s`` waits."""
    rows: int
    """0 for a request never sent (its payload was never drawn)."""
    ok: bool
    error: str = ""

    @property
    def service_ms(self) -> float:
        """Sent until answered: the server and the network, and any wait for a free
        connection of the generator's pool (``--connections``)."""
        return self.latency_ms - self.lag_ms


FIELDS = tuple(f.name for f in fields(Sample))
row = attrgetter(*FIELDS)
"""A sample as a tuple in ``FIELDS`` order: a CSV line, or what a Locust worker sends its
master (``Sample(*row)`` turns it back)."""


def write_csv(path: Path, samples: Iterable[Sample]) -> None:
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(FIELDS)
        writer.writerows(map(row, samples))


def read_csv(path: Path) -> list[Sample]:
    with open(path, newline="") as src:
        return [Sample(int(r["phase"]), float(r["intended_s"]), float(r["lag_ms"]),
                       float(r["latency_ms"]), int(r["rows"]), r["ok"] == "True", r["error"])
                for r in csv.DictReader(src)]


def distribution(values: Sequence[float]) -> dict[str, float | None]:
    if not len(values):
        return {**{name: None for name in PERCENTILES}, "max": None, "mean": None}
    array = np.asarray(values, dtype=np.float64)
    out: dict[str, float | None] = {
        name: float(np.percentile(array, q, method="inverted_cdf"))
        for name, q in PERCENTILES.items()}
    return {**out, "max": float(array.max()), "mean": float(array.mean())}


def summarize(phase: Phase, start_s: float, samples: Sequence[Sample],
              everyone: Sequence[Sample], generator_cpu: float | None) -> dict[str, Any]:
    """One phase (or several in a row pooled into one ``phase``) starting at ``start_s``.

    ``samples`` are the requests due in the phase: ``offered_rate`` counts them (the Poisson
    draw around ``phase.rate``, so "achieved >= 98% of offered" does not fail on the draw's
    noise), and the error rate and latencies are theirs. ``achieved_rate`` counts the answers
    (of ``everyone``) that *arrived* within the phase, whenever they were due: a server that
    falls behind achieves less than was offered even if it answers everything later.
    """
    end_s = start_s + phase.seconds
    ok = [s for s in samples if s.ok]
    answered = [s for s in everyone
                if s.ok and start_s <= s.intended_s + s.latency_ms / 1e3 < end_s]
    errors: dict[str, int] = {}
    for s in samples:
        if not s.ok:
            errors[s.error] = errors.get(s.error, 0) + 1
    return {
        "phase": phase.name, "nominal_rate": phase.rate, "seconds": phase.seconds,
        "requests": len(samples), "ok": len(ok), "errors": len(samples) - len(ok),
        "error_rate": (len(samples) - len(ok)) / len(samples) if samples else 0.0,
        "offered_rate": len(samples) / phase.seconds,
        "achieved_rate": len(answered) / phase.seconds,
        "rows_per_s": sum(s.rows for s in answered) / phase.seconds,
        "latency_ms": distribution([s.latency_ms for s in ok]),
        "service_ms": distribution([s.service_ms for s in ok]),
        "lag_ms": distribution([s.lag_ms for s in ok]),
        "generator_cpu": generator_cpu,
        "error_kinds": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5]),
    }
