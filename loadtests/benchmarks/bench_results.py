"""What ``make bench`` measured, as typed results, and the ratios drawn from them.

The orchestration (``loadtests/benchmarks/bench.py``) builds these, the report
(``loadtests/benchmarks/bench_report.py``) renders them, and ``to_json`` writes them as the JSON
report. A setup that could not be measured is a ``Failure`` in its place, never a missing entry:
a server that fails must show in the report.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from loadtests.benchmarks.bench_wrk import WrkResult

SETUP_LABELS = {
    "raw": "(a) model in process, best batch",
    "noop": "(b) no-op FastAPI (HTTP ceiling)",
    "naive": "(c) naive FastAPI server",
    "gateway": "(d) gateway",
}
UPSTREAM_LABELS = {
    "direct": "(e) upstream direct, one row per call",
    "gateway": "(f) gateway → upstream",
}
GOAL_QPS_RATIO = 2.5
"""The gateway must serve at least this many times the naive server's QPS on natality..."""
GOAL_MODEL = "natality"
"""...with a p99 latency no worse than the naive server's."""
CEILING_GOAL_RATIO = 0.75
"""And at least this share of the no-op FastAPI server's QPS (issue 13, goal 3)."""

INLINE = {"inline": True}
"""Field metadata: ``to_json`` writes the field's own fields in place of the field."""


def to_json(value: Any) -> Any:
    """Dataclasses as dicts of their fields (``INLINE`` ones flattened), recursively."""
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in fields(value):
            item = to_json(getattr(value, f.name))
            if f.metadata.get("inline"):
                out.update(item)
            else:
                out[f.name] = item
        return out
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, Mapping):
        return {key: to_json(item) for key, item in value.items()}
    return value


@dataclass(frozen=True)
class Failure:
    """A measurement that produced no figures, and why."""

    error: str


# --- (a) the model alone --------------------------------------------------------------------


@dataclass(frozen=True)
class BatchTiming:
    batch_size: int
    calls: int
    seconds: float
    ms_per_call: float
    rows_per_s: float


@dataclass(frozen=True)
class RawResult:
    """Rows/s of the serving signature at each batch size, in process."""

    tensorflow: str
    load_seconds: float
    by_batch: tuple[BatchTiming, ...]
    best_batch_size: int = field(init=False)
    best_rows_per_s: float = field(init=False)

    def __post_init__(self) -> None:
        best = max(self.by_batch, key=lambda timing: timing.rows_per_s)
        object.__setattr__(self, "best_batch_size", best.batch_size)
        object.__setattr__(self, "best_rows_per_s", best.rows_per_s)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RawResult:
        """Read back what the measuring subprocess printed (``to_json`` of one)."""
        return cls(doc["tensorflow"], doc["load_seconds"],
                   tuple(BatchTiming(**timing) for timing in doc["by_batch"]))


# --- (b)(c)(d) a server under wrk -------------------------------------------------------------


@dataclass(frozen=True)
class ServerRun:
    """One server's measured wrk run and what the server used meanwhile."""

    wrk: WrkResult = field(metadata=INLINE)
    startup_seconds: float = 0.0
    warmup_seconds: int = 0
    server_cpu: float | None = None
    """CPU seconds per second of the run (1.0 = one core)."""
    pid: int = 0
    log: str = ""


@dataclass(frozen=True)
class Ratios:
    """d/c, d/b and d/a on QPS and p99 of d against c, where both sides were measured."""

    gateway_vs_naive_qps: float | None = None
    gateway_vs_naive_p99: float | None = None
    gateway_vs_noop_qps: float | None = None
    gateway_vs_noop_cpu_per_request: float | None = None
    """Server CPU seconds per answered request, d over b: what QPS d/b would be with both
    servers CPU-bound on their core, and steadier than QPS on a shared machine."""
    gateway_vs_raw_best: float | None = None
    invalid_because_of_errors: tuple[str, ...] = ()
    """Setups that answered errors: their QPS is not comparable."""


def ratios(setups: Mapping[str, ServerRun | Failure], raw: RawResult | Failure | None) -> Ratios:
    measured = {name: run.wrk for name, run in setups.items() if isinstance(run, ServerRun)}
    gateway, naive, noop = (measured.get(name) for name in ("gateway", "naive", "noop"))
    out: dict[str, Any] = {}
    if gateway and naive:
        out.update(gateway_vs_naive_qps=gateway.qps / naive.qps,
                   gateway_vs_naive_p99=gateway.latency_ms.p99 / naive.latency_ms.p99)
    if gateway and noop:
        out["gateway_vs_noop_qps"] = gateway.qps / noop.qps
        cpu = [_cpu_per_request(setups[name]) for name in ("gateway", "noop")]
        if None not in cpu:
            out["gateway_vs_noop_cpu_per_request"] = cpu[0] / cpu[1]
    if gateway and isinstance(raw, RawResult):
        out["gateway_vs_raw_best"] = gateway.qps / raw.best_rows_per_s
    tainted = tuple(name for name in ("gateway", "naive", "noop")
                    if name in measured and measured[name].errors)
    return Ratios(**out, invalid_because_of_errors=tainted)


def _cpu_per_request(run: ServerRun | Failure) -> float | None:
    if not isinstance(run, ServerRun) or not run.server_cpu or not run.wrk.qps:
        return None
    return run.server_cpu / run.wrk.qps


@dataclass(frozen=True)
class Goal:
    met: bool
    needs: str
    qps_ratio: float | None = None
    p99_ratio: float | None = None


def goal(r: Ratios) -> Goal:
    needs = f"QPS >= {GOAL_QPS_RATIO}x naive, p99 <= naive, no errors"
    if r.gateway_vs_naive_qps is None or r.gateway_vs_naive_p99 is None:
        return Goal(False, needs + " (gateway or naive server not measured)")
    met = (r.gateway_vs_naive_qps >= GOAL_QPS_RATIO and r.gateway_vs_naive_p99 <= 1.0
           and not r.invalid_because_of_errors)
    return Goal(met, needs, r.gateway_vs_naive_qps, r.gateway_vs_naive_p99)


def ceiling_goal(r: Ratios) -> Goal:
    """The gateway's QPS against the HTTP ceiling (the no-op FastAPI server)."""
    needs = f"QPS >= {CEILING_GOAL_RATIO:.0%} of the no-op FastAPI server's, no errors"
    if r.gateway_vs_noop_qps is None:
        return Goal(False, needs + " (gateway or no-op server not measured)")
    met = r.gateway_vs_noop_qps >= CEILING_GOAL_RATIO and not r.invalid_because_of_errors
    return Goal(met, needs, r.gateway_vs_noop_qps)


# --- (e)(f) through an upstream ---------------------------------------------------------------


@dataclass(frozen=True)
class ThroughRun:
    """One wrk run against the upstream or the front, with both processes' counters around it."""

    wrk: WrkResult = field(metadata=INLINE)
    warmup_seconds: int
    server_cpu: Mapping[str, float | None]
    """Per process (``upstream``, ``front``): CPU seconds per second of the run."""
    upstream_predicts: int
    """Predicts the upstream answered OK over the run."""
    front_requests: int
    """Predicts the front answered OK over the run (0 when the clients called the upstream)."""
    front_mean_batch_rows: float | None = None
    front_mean_queue_wait_ms: float | None = None

    def client_requests(self, setup: str) -> int:
        """Client requests as counted by the server the clients called."""
        return self.front_requests if setup == "gateway" else self.upstream_predicts


@dataclass(frozen=True)
class UpstreamRun:
    setup: str
    """``direct`` (e) or ``gateway`` (f)."""
    connections: int
    outcome: ThroughRun | Failure = field(metadata=INLINE)


@dataclass(frozen=True)
class UpstreamRatios:
    """f/e QPS at ``connections``, the p50 and p99 (f) adds at 1 connection, rows per Predict."""

    gateway_vs_direct_qps: float | None = None
    rows_per_upstream_predict: float | None = None
    added_p50_ms_at_1: float | None = None
    added_p99_ms_at_1: float | None = None
    invalid_because_of_errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class UpstreamResult:
    """(e) and (f) at ``connections`` and at 1 connection, against the same two processes;
    ``error`` when the comparison stopped early (the runs done so far are kept)."""

    connections: int
    note: str
    runs: tuple[UpstreamRun, ...] = ()
    error: str | None = None
    startup_seconds: Mapping[str, float] = field(default_factory=dict)
    logs: Mapping[str, str] = field(default_factory=dict)
    ratios: UpstreamRatios = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratios", self._ratios())

    def measured(self, setup: str, connections: int) -> ThroughRun | None:
        for run in self.runs:
            if (run.setup, run.connections) == (setup, connections) and isinstance(
                    run.outcome, ThroughRun):
                return run.outcome
        return None

    def _ratios(self) -> UpstreamRatios:
        n = self.connections
        direct, gateway = self.measured("direct", n), self.measured("gateway", n)
        direct_1, gateway_1 = self.measured("direct", 1), self.measured("gateway", 1)
        out: dict[str, Any] = {}
        if direct and gateway:
            out["gateway_vs_direct_qps"] = gateway.wrk.qps / direct.wrk.qps
        if gateway and gateway.upstream_predicts:
            out["rows_per_upstream_predict"] = gateway.front_requests / gateway.upstream_predicts
        if direct_1 and gateway_1:
            out.update(added_p50_ms_at_1=gateway_1.wrk.latency_ms.p50 - direct_1.wrk.latency_ms.p50,
                       added_p99_ms_at_1=gateway_1.wrk.latency_ms.p99 - direct_1.wrk.latency_ms.p99)
        tainted = tuple(f"{UPSTREAM_LABELS[setup].split(',')[0]} at {connections}"
                        for setup, connections, run in (
                            ("direct", n, direct), ("gateway", n, gateway),
                            ("direct", 1, direct_1), ("gateway", 1, gateway_1))
                        if run and run.wrk.errors)
        return UpstreamRatios(**out, invalid_because_of_errors=tainted)


# --- one model, the whole run -----------------------------------------------------------------


@dataclass(frozen=True)
class ModelResult:
    setups: Mapping[str, ServerRun | Failure] = field(default_factory=dict)
    """(b)(c)(d) by setup name, in the order they ran."""
    raw: RawResult | Failure | None = None
    upstream: UpstreamResult | None = None
    distinct_bodies: int = 0
    mean_body_bytes: float = 0.0
    goal: Goal | None = None
    """Judged on ``GOAL_MODEL`` when both the gateway and the naive server were asked for."""
    ceiling_goal: Goal | None = None
    """Judged on ``GOAL_MODEL`` when both the gateway and the no-op server were asked for."""
    ratios: Ratios = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratios", ratios(self.setups, self.raw))


@dataclass(frozen=True)
class Meta:
    started: str
    cpus: int | None
    pinning: str
    wrk: str
    python: str
    commit: str
    duration: int
    warmup: int
    connections: int
    setups: tuple[str, ...]
    wrk_timeout: str
    tensorflow: str | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class Report:
    meta: Meta
    models: Mapping[str, ModelResult]
