"""Locust workers for a distributed run: started here beside the master (``--workers N``), or
running elsewhere and serving every master that comes (``--expect-workers N``; on a cluster
the locust-workers Deployment runs ``python -m loadtests.locust_scenarios.run worker``).

Each worker is its own ``locust --worker`` process, as on a cluster, rather than Locust's
``--processes`` (which forks the master after the locustfile has set gRPC up for gevent).
"""
from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtests.support.processes import REPO, Job, free_port

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
DEFAULT_PORT = 5557
"""Locust's own default master port; the locust-master Service's."""
CONNECT_WAIT_S = 120.0
"""How long a master waits for its workers to connect (pods may still be starting)."""
QUIT_WAIT_S = 15.0


@dataclass(frozen=True)
class Workers:
    """Locust's distributed mode: a master runs the schedule and merges the samples of
    ``count`` worker processes, each sending its share of the rate."""

    count: int
    port: int | None = None
    """None: start the workers here, on a free loopback port. A port: they run elsewhere and
    connect to this port of the master."""

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"a distributed run needs at least one worker, not {self.count}")

    @contextlib.contextmanager
    def master(self, out: Path, loadgen: Sequence[str] = ()) -> Iterator[list[str]]:
        """The master's own flags; unless the workers run elsewhere, with them started here
        for the length of the block (logs ``OUT/worker-I.log``), on a free loopback port."""
        expect = ["--expect-workers", str(self.count), "--expect-workers-max-wait", f"{CONNECT_WAIT_S:g}"]
        if self.port is not None:
            yield ["--master", "--master-bind-port", str(self.port), *expect]
            return
        port = free_port()
        with contextlib.ExitStack() as workers:
            for index in range(self.count):
                workers.enter_context(Job(f"locust worker {index}", argv("127.0.0.1", port, loadgen),
                                          out / f"worker-{index}.log"))
            yield ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port), *expect]


def argv(master_host: str, master_port: int, loadgen: Sequence[str] = ()) -> list[str]:
    """One ``locust --worker`` (on the ``loadgen`` cores, e.g. ``taskset -c 0``); the master
    sends it the users to run and every option of the scenario."""
    return [*loadgen, sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker",
            "--master-host", master_host, "--master-port", str(master_port)]


def serve(master_host: str, master_port: int) -> int:
    """Run a worker for each master in turn, until one fails or SIGTERM (which must have been
    turned into KeyboardInterrupt); returns the exit status.

    A headless master tells its workers to quit when its run ends, and an SLO search starts a
    master per step: a worker pod restarted by Kubernetes after every step would soon wait
    minutes in its crash back-off. A worker that fails ends this too, and Kubernetes restarts it.
    """
    while True:
        worker = subprocess.Popen(argv(master_host, master_port), cwd=REPO)
        try:
            status = worker.wait()
        except KeyboardInterrupt:
            worker.terminate()  # Locust's SIGTERM handler: it tells its master it quits
            try:
                return worker.wait(timeout=QUIT_WAIT_S)
            except subprocess.TimeoutExpired:
                worker.kill()
                return worker.wait()
        if status != 0:
            return status
