"""Running wrk and reading its report: one closed-loop run replaying pre-generated bodies.

wrk's text report (``--latency``) rounds latencies to three significant digits and prints
its error lines only when they are non-zero; our Lua script (``wrk/post_bodies.lua``) adds a
``BENCH_JSON`` line with wrk's exact figures, which replaces the rounded latencies and must
agree with the text on every count.
"""
from __future__ import annotations

import dataclasses
import json
import re
import resource
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LUA_SCRIPT = Path(__file__).resolve().parent / "wrk" / "post_bodies.lua"
TIMEOUT = "30s"
"""wrk leaves requests slower than its timeout (2 s by default) out of the latency figures
and counts them as timeouts; 30 s keeps slow servers' tails in the percentiles."""

_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_DURATION = r"[0-9.]+(?:us|ms|s|m|h)"


def duration_ms(text: str) -> float:
    """A wrk duration (``812.00us``, ``5.81ms``, ``1.20s``, ``2.00m``) in milliseconds."""
    match = re.fullmatch(r"\s*([0-9.]+)(us|ms|s|m|h)\s*", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match[1]) * _TIME_UNITS[match[2]]


@dataclass(frozen=True)
class Latency:
    """Milliseconds. ``mean`` and ``max`` come from wrk's thread stats line (absent from a
    report without one), ``p999`` only from the exact line."""

    p50: float
    p75: float
    p90: float
    p99: float
    mean: float | None = None
    max: float | None = None
    p999: float | None = None


@dataclass(frozen=True)
class SocketErrors:
    connect: int = 0
    read: int = 0
    write: int = 0
    timeout: int = 0

    @property
    def total(self) -> int:
        return self.connect + self.read + self.write + self.timeout


@dataclass(frozen=True)
class WrkResult:
    """One wrk run; ``errors`` counts every failed request or socket error."""

    requests: int
    duration_s: float
    qps: float
    latency_ms: Latency
    non_2xx: int = 0
    socket_errors: SocketErrors = SocketErrors()
    exact: bool = False
    """True when the latencies come from the script's exact ``BENCH_JSON`` line."""
    loadgen_cpu: float | None = None
    """CPU seconds wrk used per second of wall time (1.0 = one core saturated)."""
    errors: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "errors", self.non_2xx + self.socket_errors.total)


def parse_output(text: str) -> WrkResult:
    """Parse wrk's ``--latency`` report, and the ``BENCH_JSON`` line of our Lua script if any.

    Raises ValueError if the report is incomplete or the two disagree.
    """
    def need(pattern: str) -> re.Match:
        match = re.search(pattern, text, re.MULTILINE)
        if match is None:
            raise ValueError(f"wrk output lacks /{pattern}/:\n{text}")
        return match

    done = need(rf"^\s*(\d+) requests in ({_DURATION}),")
    qps = float(need(r"^Requests/sec:\s*([0-9.]+)")[1])
    percentiles = {f"p{p}": duration_ms(v) for p, v in re.findall(
        rf"^\s*(50|75|90|99)%\s+({_DURATION})\s*$", text, re.MULTILINE)}
    if set(percentiles) != {"p50", "p75", "p90", "p99"}:
        raise ValueError(f"wrk output lacks the latency distribution (run with --latency):\n{text}")
    stats = re.search(rf"^\s*Latency\s+({_DURATION})\s+\S+\s+({_DURATION})", text, re.MULTILINE)
    if stats:
        percentiles.update(mean=duration_ms(stats[1]), max=duration_ms(stats[2]))
    non_2xx = re.search(r"^\s*Non-2xx or 3xx responses:\s*(\d+)", text, re.MULTILINE)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    result = WrkResult(
        requests=int(done[1]), duration_s=duration_ms(done[2]) / 1e3, qps=qps,
        latency_ms=Latency(**percentiles), non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=SocketErrors(*map(int, sockets.groups())) if sockets else SocketErrors())
    exact = re.search(r"^BENCH_JSON (\{.*\})\s*$", text, re.MULTILINE)
    return _with_exact(result, json.loads(exact[1])) if exact else result


def _with_exact(result: WrkResult, doc: dict[str, Any]) -> WrkResult:
    """``result`` with the exact line's latencies and duration, once its counts agree."""
    errors = doc["errors"]
    if doc["requests"] != result.requests or errors["status"] != result.non_2xx:
        raise ValueError(f"wrk's text report and BENCH_JSON disagree: {result} vs {doc}")
    sockets = SocketErrors(**{k: errors[k] for k in ("connect", "read", "write", "timeout")})
    if sockets != result.socket_errors:
        raise ValueError(f"wrk's socket errors disagree: {result.socket_errors} vs {sockets}")
    latency = {k.replace("p99.9", "p999"): v / 1e3 for k, v in doc["latency_us"].items()}
    return dataclasses.replace(result, duration_s=doc["duration_us"] / 1e6,
                               latency_ms=Latency(**latency), exact=True)


def version() -> str:
    """wrk's version line, or ``missing``."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return "missing"
    proc = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    return text.splitlines()[0].strip() if text else "?"


def run(url: str, bodies_file: Path, duration_s: int, connections: int,
        loadgen: Sequence[str] = ()) -> WrkResult:
    """One closed-loop run (one thread, on the ``loadgen`` cores) replaying ``bodies_file``,
    one JSON body per line; wrk's CPU use is recorded."""
    argv = [*loadgen, "wrk", "-t1", f"-c{connections}", f"-d{duration_s}s",
            f"--timeout={TIMEOUT}", "--latency", "-s", str(LUA_SCRIPT), url, "--",
            str(bodies_file)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()}\n{proc.stdout}")
    result = parse_output(proc.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return dataclasses.replace(
        result, loadgen_cpu=cpu / result.duration_s if result.duration_s else None)
