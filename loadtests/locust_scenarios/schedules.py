"""Offered-load schedules: what arrival rate the load generator keeps, phase by phase.

A schedule is a warm-up phase (not measured) followed by measured phases, each at a fixed
Poisson arrival rate. Rates, not user counts: the generator is open-loop, so the load
offered does not drop when the server slows down (see ``loadtests/locust_scenarios/locustfile.py``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Phase:
    name: str
    rate: float
    """Mean arrival rate, requests/s."""
    seconds: float
    measured: bool = True


@dataclass(frozen=True)
class Schedule:
    phases: tuple[Phase, ...]

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.phases)

    def phase_at(self, t: float) -> int | None:
        """Index of the phase running ``t`` seconds after the start; None once it is over."""
        end = 0.0
        for index, phase in enumerate(self.phases):
            end += phase.seconds
            if t < end:
                return index
        return None

    def ends(self) -> list[float]:
        """Each phase's end, in seconds after the start."""
        out, end = [], 0.0
        for phase in self.phases:
            end += phase.seconds
            out.append(end)
        return out

    def starts(self) -> list[float]:
        return [end - phase.seconds for end, phase in zip(self.ends(), self.phases, strict=True)]

    def measured(self) -> tuple[Phase, float]:
        """The measured phases (they follow the warm-up without a gap) as one phase at their
        mean rate, and its start."""
        measured = [p for p in self.phases if p.measured]
        seconds = sum(p.seconds for p in measured)
        return (Phase("measured", sum(p.rate * p.seconds for p in measured) / seconds, seconds),
                self.seconds - seconds)


def _warmup(rate: float, seconds: float) -> tuple[Phase, ...]:
    return (Phase("warm-up", rate, seconds, measured=False),) if seconds > 0 else ()


def steady(rate: float, seconds: float, warmup: float) -> Schedule:
    return Schedule((*_warmup(rate, warmup), Phase("steady", rate, seconds)))


def step_ramp(rate: float, seconds: float, warmup: float, steps: int = 4) -> Schedule:
    """``steps`` equal steps up to ``rate``, each held ``seconds``."""
    rates = [rate * (i + 1) / steps for i in range(steps)]
    return Schedule((*_warmup(rates[0], warmup),
                     *(Phase(f"step {i + 1}/{steps}", r, seconds) for i, r in enumerate(rates))))


def spike(rate: float, seconds: float, warmup: float) -> Schedule:
    """0.5x, then 1.5x, then 0.5x of ``rate``, each held ``seconds``: does the server absorb a
    burst, and how fast does it recover?"""
    low, high = 0.5 * rate, 1.5 * rate
    return Schedule((*_warmup(low, warmup), Phase("before", low, seconds),
                     Phase("spike", high, seconds), Phase("after", low, seconds)))


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "steady": steady, "ramp": step_ramp, "spike": spike}


def build(name: str, rate: float, seconds: float, warmup: float, ramp_steps: int = 4) -> Schedule:
    """The schedule ``name`` of ``SCHEDULES`` (``ramp_steps`` applies to the ramp only)."""
    extra = {"steps": ramp_steps} if name == "ramp" else {}
    return SCHEDULES[name](rate, seconds, warmup, **extra)
