"""One headless Locust run of ``loadtests/locust_scenarios/locustfile.py``, as a pinned subprocess.

Locust monkey-patches the standard library with gevent when imported, so it never runs in the
orchestrating process: each scenario is its own ``locust`` process (the master of a distributed
run, with its workers: ``loadtests/locust_scenarios/workers.py``), and its ``summary.json`` is
the result. Locust's CSV and HTML reports sit next to it.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from loadtests.locust_scenarios.schedules import build
from loadtests.locust_scenarios.workers import CONNECT_WAIT_S, LOCUSTFILE, Workers
from loadtests.support.payloads import KeyShare
from loadtests.support.processes import REPO, SERVER_ENV

USERS = {"rest": "RestUser", "grpc": "GrpcUser", "v2-json": "V2JsonUser", "v2-binary": "V2BinaryUser"}
"""Our name for each Locust user class: TF Serving's REST predict and gRPC Predict, the Open
Inference Protocol's REST infer with JSON or binary tensors."""
HTTP_USERS = frozenset({"rest", "v2-json", "v2-binary"})
"""Users of the REST port (``--host http://HOST:PORT``); the others take ``HOST:PORT``."""


@dataclass(frozen=True)
class Scenario:
    user: str
    """A key of ``USERS``."""
    host: str
    """``http://HOST:PORT`` for ``HTTP_USERS``, ``HOST:PORT`` for grpc."""
    model: str = "natality"
    rows: str = "1"
    schedule: str = "steady"
    rate: float = 100.0
    seconds: float = 10.0
    warmup: float = 3.0
    ramp_steps: int = 4
    drain: float = 15.0
    """Longer than ``timeout``: every request sent gets its answer or its timeout."""
    max_in_flight: int = 1000
    """Per generator process."""
    timeout: float = 10.0
    workers: Workers | None = None
    """Locust's distributed mode; None: one process sends and measures."""
    keys: KeyShare | None = None
    """Rows carry keys, a share of them precomputed (a gateway with a prediction store)."""

    def at(self, rate: float) -> Scenario:
        return replace(self, rate=rate)

    def argv(self, out: Path, loadgen: Sequence[str] = ()) -> list[str]:
        if self.user not in USERS:
            raise ValueError(f"unknown user {self.user!r}; known: {', '.join(USERS)}")
        return [*loadgen, sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
                USERS[self.user], "--host", self.host, "--model", self.model, "--rows", self.rows,
                "--schedule", self.schedule, "--rate", f"{self.rate:g}",
                "--seconds", f"{self.seconds:g}", "--warmup", f"{self.warmup:g}",
                "--ramp-steps", str(self.ramp_steps), "--drain", f"{self.drain:g}",
                "--max-in-flight", str(self.max_in_flight), "--timeout", f"{self.timeout:g}",
                "--out-dir", str(out), "--csv", str(out / "locust"),
                "--html", str(out / "locust.html"), "--logfile", str(out / "locust.log"),
                "--exit-code-on-error", "0", "--only-summary", *self._key_flags()]

    def _key_flags(self) -> list[str]:
        if self.keys is None:
            return []
        return ["--key-field", self.keys.field, "--precomputed-share", f"{self.keys.share:g}",
                "--keys", str(self.keys.distinct)]


def run(scenario: Scenario, out: Path, loadgen: Sequence[str] = ()) -> dict[str, Any]:
    """Run ``scenario`` (every process on the ``loadgen`` cores, e.g. ``taskset -c 0``) and
    return its summary, with where its files are."""
    out.mkdir(parents=True, exist_ok=True)
    summary_file = out / "summary.json"
    summary_file.unlink(missing_ok=True)  # never read a previous run's
    plan = build(scenario.schedule, scenario.rate, scenario.seconds, scenario.warmup,
                 scenario.ramp_steps)
    limit = plan.seconds + scenario.drain + 120  # start-up (TensorFlow for gRPC) and writing
    argv = scenario.argv(out, loadgen)
    with contextlib.ExitStack() as stack:
        if scenario.workers is not None:
            argv += stack.enter_context(scenario.workers.master(out, loadgen))
            limit += CONNECT_WAIT_S
        process = subprocess.run(argv, cwd=REPO, env={**os.environ, **SERVER_ENV},
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=limit)
    (out / "locust.out").write_bytes(process.stdout)
    if process.returncode != 0 or not summary_file.exists():
        tail = process.stdout.decode(errors="replace").splitlines()[-20:]
        here = scenario.workers is not None and scenario.workers.port is None
        logs = f" (the workers' logs: {out}/worker-*.log)" if here else ""
        raise RuntimeError(f"locust exited with {process.returncode}"
                           f"{'' if summary_file.exists() else ' and wrote no summary'}{logs}:\n"
                           + "\n".join(tail))
    summary = json.loads(summary_file.read_text())
    summary["files"] = {name: str(out / name) for name in (
        "summary.json", "samples.csv", "locust_stats.csv", "locust.html", "locust.log")}
    return summary
