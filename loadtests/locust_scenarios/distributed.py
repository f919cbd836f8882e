"""The master's side of an open-loop run: one schedule, its rate split over the generators,
all their samples merged into one summary.

Locust's distributed mode carries the run: ``locust --master`` plays ``OpenLoopShape`` (one
user per worker, so each worker runs one generator, ``locustfile.OpenLoop``) and talks to
the workers with Locust's custom messages. A single ``locust`` process is the same run with
one generator: Locust's ``LocalRunner`` delivers custom messages in-process, so both modes
go through every line here. The messages:

- ``READY`` (generator -> master), when its payloads are built: who it is (``Generator``).
  The schedule's clock starts once every connected worker is ready (the warm-up is load,
  not set-up); a worker that is ready later joins the running schedule.
- ``PLAN`` (master -> every generator): ``{"elapsed": the schedule's clock, "workers": how
  many generators share the rate}``. The first one a generator gets starts its clock; each
  later one re-splits the rate, sent when a worker joins (it says ``READY``) or leaves (Locust
  drops it from its clients).
- ``SAMPLES`` (generator -> master): its samples as rows (``samples.row``), in chunks, once
  it has finished (shipping never competes with sending); the last chunk also carries its
  own count of them, its CPU readings and the plans it followed. A worker then sends Locust's
  statistics report at once.

Locust's own statistics (its CSV and HTML report) are merged by Locust from the workers'
reports; the run ends only once they count every sample too.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import locust
from locust.runners import STATE_MISSING, WORKER_REPORT_INTERVAL, MasterRunner, Runner
from locust.stats import CSV_STATS_INTERVAL_SEC

from loadtests.locust_scenarios.samples import Sample, summarize, write_csv
from loadtests.locust_scenarios.schedules import Schedule, build
from loadtests.support.payloads import RowsMix

READY, PLAN, SAMPLES = "open-loop ready", "open-loop plan", "open-loop samples"
CHUNK = 20_000
"""Samples per ``SAMPLES`` message (about 1 MB)."""
STATS_WAIT_S = WORKER_REPORT_INTERVAL + 1.0
"""How long Locust's statistics may lag the samples. A worker reports them right after its
samples (and every 3 s); one that vanished never does: the run ends anyway after this."""
CSV_SETTLE_S = CSV_STATS_INTERVAL_SEC
"""Locust rewrites its CSV once a second: run this long after its statistics are complete
(the shutdown that follows gives the last rewrite time to finish)."""


@dataclass
class Generator:
    """One process sending load (a worker, or the single process), as the master sees it."""

    worker: int
    """Locust's worker index (0 in a single process)."""
    host: str
    pid: int
    cores: list[int]
    kind: str
    """The request type its user reports (``POST``, ``grpc``)."""
    joined_s: float | None = None
    """When it became ready on the schedule's clock; None: before the schedule started."""
    requests: int | None = None
    """Its own count of its samples, sent with the last of them: None until it finished."""
    received: int = 0
    cpu_marks: dict[int, tuple[float, float]] = field(default_factory=dict)
    """Phase boundary (0: the start, i: the end of phase i - 1, or where the generator
    started) -> (clock, its CPU seconds)."""
    shares: list[list[float]] = field(default_factory=list)
    """(clock, workers sharing the rate) of each plan it followed."""

    @property
    def done(self) -> bool:
        return self.requests is not None

    def cpu(self, begin: int, end: int) -> float | None:
        """Its CPU use (1.0 = one core) from boundary ``begin`` to ``end``; None if it did
        not run over both."""
        if begin not in self.cpu_marks or end not in self.cpu_marks:
            return None
        (t0, cpu0), (t1, cpu1) = self.cpu_marks[begin], self.cpu_marks[end]
        return (cpu1 - cpu0) / (t1 - t0) if t1 > t0 else None


def _connected(runner: Runner, node: str) -> bool:
    if isinstance(runner, MasterRunner):
        worker = runner.clients.get(node)
        return worker is not None and worker.state != STATE_MISSING
    return True  # a single process is its own generator


class Collector:
    """Starts the schedule's clock, splits its rate over the generators and keeps their
    samples (``locust --master``, or the single process)."""

    def __init__(self, options: Any, runner: Runner) -> None:
        self.options = options
        self.schedule: Schedule = build(options.schedule, options.rate, options.seconds,
                                        options.warmup, options.ramp_steps)
        self.generators: dict[str, Generator] = {}
        """Node id -> every generator that said ``READY``, gone or not."""
        self.samples: list[Sample] = []
        self.splits: list[tuple[float, int]] = []
        """(clock, workers) of every ``PLAN`` sent."""
        self._runner = runner
        self._t0: float | None = None
        self._done_at: float | None = None
        self._counted_at: float | None = None
        runner.register_message(READY, self._on_ready)
        runner.register_message(SAMPLES, self._on_samples)

    @property
    def started(self) -> bool:
        return self._t0 is not None

    def clock(self) -> float:
        assert self._t0 is not None, "the schedule starts when the generators are ready"
        return time.perf_counter() - self._t0

    def _sharing(self) -> list[Generator]:
        """The generators that take a share of the rate: ready and still connected."""
        return [g for node, g in self.generators.items() if _connected(self._runner, node)]

    def _on_ready(self, environment: Any, msg: Any, **_: Any) -> None:
        self.generators[msg.node_id] = Generator(
            **msg.data, joined_s=round(self.clock(), 3) if self.started else None)
        if not self.started:
            if len(self._sharing()) < max(1, self._runner.worker_count):
                return
            self._t0 = time.perf_counter()
        self._announce()

    def _announce(self) -> None:
        workers = len(self._sharing())
        self.splits.append((round(self.clock(), 3), workers))
        logging.info("at %.3f s the rate is split over %d worker(s)", self.clock(), workers)
        self._runner.send_message(PLAN, {"elapsed": self.clock(), "workers": workers})

    def follow(self) -> None:
        """Re-split the rate if a worker has left (the shape calls this every second)."""
        sharing = len(self._sharing())
        if self.started and sharing and sharing != self.splits[-1][1]:
            self._announce()

    def _on_samples(self, environment: Any, msg: Any, **_: Any) -> None:
        generator = self.generators.get(msg.node_id)
        if generator is None:
            logging.warning("samples from %s, which never said it was ready: dropped", msg.node_id)
            return
        data = msg.data
        self.samples.extend(Sample(*values) for values in data["samples"])
        generator.received += len(data["samples"])
        if "requests" in data:
            generator.requests = data["requests"]
            generator.cpu_marks = {boundary: (t, cpu) for boundary, t, cpu in data["cpu_marks"]}
            generator.shares = data["shares"]
            self._note_counted()

    def _note_counted(self) -> None:
        """Note when every generator still connected has sent all its samples and Locust's
        statistics count them all (or had ``STATS_WAIT_S`` to): in one process as the last
        samples arrive, from workers with their next report."""
        if self._counted_at is not None or not self.started or not all(g.done for g in self._sharing()):
            return
        now = self.clock()
        self._done_at = self._done_at or now
        if self._runner.stats.total.num_requests >= len(self.samples) or now >= self._done_at + STATS_WAIT_S:
            self._counted_at = now

    def over(self) -> bool:
        """All samples are in, Locust's statistics count them and its CSV was rewritten since."""
        self._note_counted()
        return self._counted_at is not None and self.clock() >= self._counted_at + CSV_SETTLE_S

    def write(self, out: Path) -> None:
        """``samples.csv`` (in the order they were due) and ``summary.json``."""
        for generator in self.generators.values():
            if generator.requests != generator.received:
                logging.warning("worker %d sent %d of its %s samples", generator.worker,
                                generator.received, generator.requests)
        self.samples.sort(key=lambda s: s.intended_s)
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / "samples.csv", self.samples)
        (out / "summary.json").write_text(json.dumps(self.summary(), indent=1))

    def summary(self) -> dict[str, Any]:
        phases = self.schedule.phases
        by_phase: list[list[Sample]] = [[] for _ in phases]
        for s in self.samples:
            by_phase[s.phase].append(s)
        first = next(i for i, p in enumerate(phases) if p.measured)
        pooled, start = self.schedule.measured()
        options = self.options
        generators = sorted(self.generators.values(), key=lambda g: g.worker)
        return {
            "scenario": {"user": generators[0].kind if generators else "", "host": options.host,
                         "model": options.model, "signature": options.signature,
                         "rows": str(RowsMix.parse(options.rows)), "schedule": options.schedule,
                         "rate": options.rate, "seconds": options.seconds, "warmup": options.warmup,
                         "max_in_flight": options.max_in_flight, "timeout": options.timeout},
            "generators": [{"worker": g.worker, "host": g.host, "pid": g.pid, "cores": g.cores,
                            "joined_s": g.joined_s, "requests": g.requests, "received": g.received,
                            "cpu": g.cpu(first, len(phases)), "shares": g.shares}
                           for g in generators],
            "splits": self.splits,
            "master": {"pid": os.getpid(), "python": platform.python_version(),
                       "locust": locust.__version__},
            "phases": [{"measured": phase.measured,
                        **summarize(phase, start_s, samples, self.samples, self._cpu(i, i + 1))}
                       for i, (phase, start_s, samples)
                       in enumerate(zip(phases, self.schedule.starts(), by_phase, strict=True))],
            "measured": summarize(pooled, start, [s for s in self.samples if phases[s.phase].measured],
                                  self.samples, self._cpu(first, len(phases))),
        }

    def _cpu(self, begin: int, end: int) -> float | None:
        """The busiest generator's CPU use over those phases: the one that limits the run."""
        return max((cpu for g in self.generators.values() if (cpu := g.cpu(begin, end)) is not None),
                   default=None)
