"""Servers to search: the gateway at each batching setting, batching off, the naive server,
and the gateway in front of an upstream; each started on the server core and SLO-searched.

A setting's batching knobs go into a TF Serving ``BatchingParameters`` file, the same file
``make serve`` and TF Serving read. The search of each setting starts from the previous
setting's answer, which saves most bracketing steps. ``Servers`` starts each setting's
server once and keeps the ones asked for again (batching off, the best setting) running.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from loadtests.locust_scenarios import scenario as locust_scenario
from loadtests.locust_scenarios.scenario import HTTP_USERS, Scenario
from loadtests.locust_scenarios.slo import SearchPlan, search
from loadtests.support.payloads import RowsMix, check, instances, predict_body
from loadtests.support.probes import PRECOMPUTED_OUTCOMES, Counters, scrape, settle, validate
from loadtests.support.processes import Pinning, Server, cpu_share, free_port, log

QUEUE_ROWS = 8192
"""Rows a gateway queues before answering 429, whatever its max_batch_size (as make serve)."""


@dataclass(frozen=True)
class Setting:
    name: str
    server: str
    """``gateway``, ``naive`` (one model call per request) or ``upstream`` (the gateway,
    batching, in front of a second process playing TF Serving without batching)."""
    max_batch_size: int | None = None
    timeout_ms: float | None = None
    """None with ``server="gateway"``: batching off."""
    flags: tuple[str, ...] = ()
    """More flags for the (front) gateway, e.g. a prediction store."""

    @property
    def batching(self) -> bool:
        return self.max_batch_size is not None

    @property
    def slug(self) -> str:
        return slug(self.name)

    def batching_config(self) -> str:
        assert self.max_batch_size is not None and self.timeout_ms is not None
        return (f"# {self.name}\nmax_batch_size {{ value: {self.max_batch_size} }}\n"
                f"batch_timeout_micros {{ value: {round(self.timeout_ms * 1000)} }}\n"
                f"max_enqueued_batches {{ value: {math.ceil(QUEUE_ROWS / self.max_batch_size)} }}\n"
                "num_batch_threads { value: 1 }\n")


def slug(text: str) -> str:
    """A file name for ``text``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


BATCHING_OFF = Setting("batching off", "gateway")
UPSTREAM = replace(BATCHING_OFF, name="upstream")
"""What plays TF Serving behind a front: the gateway without batching (a server of its own,
or batching off's when ``Servers`` has it running)."""
NAIVE = Setting("naive server", "naive")
MAKE_SERVE = Setting("batch 128, 2 ms (make serve)", "gateway", 128, 2.0)
"""The settings of serving/examples/batching.config."""


def grid(batch_sizes: tuple[int, ...], timeouts_ms: tuple[float, ...]) -> list[Setting]:
    return [Setting(f"batch {b}, {t:g} ms", "gateway", b, t)
            for b, t in itertools.product(batch_sizes, timeouts_ms)]


@dataclass(frozen=True)
class Target:
    """A running server under test."""

    rest: str
    grpc: str | None
    servers: tuple[Server, ...]
    """What to watch: (front,) or (front, upstream)."""


@contextlib.contextmanager
def serve(setting: Setting, model: str, model_dir: Path, pinning: Pinning,
          out: Path, upstream: Target | None = None) -> Iterator[Target]:
    """Start ``setting``'s server(s) on the server core; yield once they answer right. An
    ``upstream`` setting's front is started in front of ``upstream`` when given (which stays
    up after), else in front of an upstream of its own."""
    python = [*pinning.server, sys.executable, "-m"]
    rest, grpc = free_port(), free_port()
    model_flags = [f"--model_name={model}", f"--model_base_path={model_dir}"]
    batching: list[str] = []
    if setting.batching:
        config = out / f"{setting.slug}.batching.config"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(setting.batching_config())
        batching = ["--enable_batching", f"--batching_parameters_file={config}"]
    with contextlib.ExitStack() as stack:
        if setting.server == "naive":
            starts = [([*python, "loadtests.baselines.naive_server", f"--port={rest}",
                        *model_flags], rest)]
        elif setting.server == "upstream":  # the upstream first: the front asks it for versions
            if upstream is None:
                upstream = stack.enter_context(serve(UPSTREAM, model, model_dir, pinning, out))
            starts = [([*python, "serving", f"--port={grpc}", f"--rest_api_port={rest}",
                        f"--upstream={upstream.grpc}", f"--model_name={model}",
                        "--model_base_path=unused", *batching, *setting.flags], rest)]
        else:
            starts = [([*python, "serving", f"--port={grpc}", f"--rest_api_port={rest}",
                        *model_flags, *batching, *setting.flags], rest)]
        servers: list[Server] = []
        for index, (argv, port) in enumerate(starts):
            servers.append(stack.enter_context(Server(
                f"{setting.slug}-{index}", argv, out / "logs" / f"{setting.slug}-{index}.log", port)))
        front = servers[-1]
        url = f"{front.url}/v1/models/{model}:predict"
        validate(url, [predict_body(instances(model, k, seed=k)) for k in (1, 3, 8)],
                 lambda body, response: check(model, body, response))
        behind = upstream.servers if setting.server == "upstream" and upstream else ()
        yield Target(front.url, None if setting.server == "naive" else f"127.0.0.1:{grpc}",
                     (*reversed(servers), *behind))


class Servers:
    """Each setting's server(s), started on first use and kept running until ``keep_only``
    or the end of the ``with`` block: ``local`` runs batching off and the best batching
    setting again after their searches (gRPC, the spike, the ramp, the upstream behind a
    front), and each start saved is a model load and warm-up. Settings that differ only by
    name share a server; one found dead is started again."""

    def __init__(self, model: str, model_dir: Path, pinning: Pinning, out: Path) -> None:
        self.model, self.model_dir, self.pinning, self.out = model, model_dir, pinning, out
        self._running: dict[Setting, tuple[Target, contextlib.ExitStack]] = {}

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.keep_only()

    def target(self, setting: Setting) -> Target:
        """``setting``'s running server(s), started if need be."""
        key = replace(setting, name="")
        if key in self._running:
            target, stack = self._running[key]
            if all(server.alive() for server in target.servers):
                return target
            del self._running[key]
            stack.close()
        upstream = self.target(UPSTREAM) if setting.server == "upstream" else None
        with contextlib.ExitStack() as stack:
            target = stack.enter_context(serve(setting, self.model, self.model_dir, self.pinning,
                                               self.out, upstream))
            self._running[key] = (target, stack.pop_all())
        return target

    def keep_only(self, *settings: Setting) -> None:
        """Stop every server but those of ``settings``."""
        keep = {replace(setting, name="") for setting in settings}
        for key in [key for key in self._running if key not in keep]:
            self._running.pop(key)[1].close()


def measure_step(target: Target, base: Scenario, rate: float, out: Path,
                 pinning: Pinning, model: str) -> dict[str, Any]:
    """One steady step at ``rate``: the load's summary plus the servers' CPU and, for the
    gateway, how many rows each model call carried."""
    if target.grpc is not None:  # a gateway: a failed step's backlog must clear first
        settle(target.servers[:1], model, timeout=30)
    cpu_before = [s.cpu_seconds() for s in target.servers]
    counters_before = _counters(target, model)
    summary = locust_scenario.run(base.at(rate), out, pinning.loadgen)
    step = summary["measured"]
    for server in target.servers:
        server.check_alive(f"at {rate:g}/s")
    seconds = base.warmup + base.seconds  # CPU is read around the whole run: close enough
    step["server_cpu"] = [cpu_share(before, server.cpu_seconds(), seconds)
                          for before, server in zip(cpu_before, target.servers, strict=True)]
    counters_after = _counters(target, model)
    if counters_before and counters_after and counters_after.batches > counters_before.batches:
        rows = counters_after.batch_rows - counters_before.batch_rows
        step["rows_per_model_call"] = rows / (counters_after.batches - counters_before.batches)
        precomputed = {outcome: after - before for outcome, before, after in zip(
            PRECOMPUTED_OUTCOMES, counters_before.precomputed, counters_after.precomputed, strict=True)}
        if any(precomputed.values()):  # a batch's rows found in the store never reach the model
            step["precomputed_rows"] = precomputed
        step["model_rows_per_s"] = (rows - precomputed["hit"]) / seconds
    step["files"] = summary["files"]
    return step


def _counters(target: Target, model: str) -> Counters | None:
    try:
        return scrape(target.servers[0], model)  # the front: its batches are the model calls
                                                  # (upstream Predicts when it has an upstream)
    except (ValueError, OSError):
        return None  # the naive server exports no metrics


def search_setting(setting: Setting, base: Scenario, plan: SearchPlan, servers: Servers,
                   fixed_rate: float | None = None) -> dict[str, Any]:
    """SLO-search ``setting``'s server (started by ``servers`` if need be) with ``base`` (its
    user and rows). A setting that fails (a server that dies, a run that times out) is a
    result that says so."""
    log(f"{setting.name}: starting")
    head = {"setting": asdict(setting), "user": base.user, "rows": str(RowsMix.parse(base.rows))}
    try:
        result = search_target(servers.target(setting), setting.name, base, plan,
                               servers.pinning, servers.out / "runs" / setting.slug, fixed_rate)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        log(f"{setting.name}: FAILED: {error}")
        return {**head, "slo_ms": plan.slo_ms, "max_qps": None, "p99_ms_at_max": None,
                "first_failing_rate": None, "failed_because": f"FAILED: {error}",
                "converged": False, "generator_bound": False, "steps": []}
    return {**head, **result}


def search_target(target: Target, label: str, base: Scenario, plan: SearchPlan, pinning: Pinning,
                  runs: Path, fixed_rate: float | None = None) -> dict[str, Any]:
    """SLO-search a running ``target`` with ``base`` (its user and rows); each step's files
    under ``runs``. With ``fixed_rate``, one step at that rate comes first (``fixed``): the
    same offered load for every case compared."""
    host = target.rest if base.user in HTTP_USERS else target.grpc
    assert host is not None, f"{label} has no {base.user} API"
    counter = itertools.count(1)

    def measure(rate: float) -> dict[str, Any]:
        step = measure_step(target, replace(base, host=host), rate, runs / f"{next(counter)}-{rate}",
                            pinning, base.model)
        log(f"{label}: {rate}/s -> achieved {step['achieved_rate']:.0f}/s, "
            f"p99 {step['latency_ms']['p99'] or float('nan'):.1f} ms, "
            f"errors {step['errors']}, generator CPU {step['generator_cpu'] or 0:.0%}")
        return step

    fixed = {"fixed": measure(fixed_rate)} if fixed_rate else {}
    result = {**search(measure, plan), **fixed}
    log(f"{label}: max {result['max_qps']} req/s at p99 <= {plan.slo_ms:g} ms")
    return result
