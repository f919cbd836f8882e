"""Processes under test, how to wait for them, and which cores they run on.

The one launcher of the repo: ``make bench``, ``make loadtest``, the batch and streaming
benchmarks and the tests start every server or job process through ``Job`` / ``Server``.
Each runs in its own process group with its output in a log file, and is stopped with its
children on exit, failure, Ctrl-C or SIGTERM; a server counts as started only once its
readiness endpoint answers 200 (a bound port is not enough: models load after the bind), and
a process that dies while waited for fails with its log tail. ``free_port`` and
``wait_until`` are the only port picker and the only condition wait of the repo (the tests
import them too): nothing waits by sleeping a fixed time.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
SERVER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
READY_TIMEOUT_S = 300.0
"""Model loading and warm-up of the image model on a busy shared core can take minutes."""

T = TypeVar("T")


def log(message: str) -> None:
    """A progress line on stderr, named after the running program (bench, run, ...)."""
    program = Path(sys.argv[0]).stem
    print(f"[{program} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A loopback TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kb(pid: int | str = "self") -> int:
    """A process's resident memory now (``/proc/PID/status`` VmRSS), in kB; "self": ours."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wait_until(predicate: Callable[[], T], timeout: float = 60.0, what: str = "a condition",
               interval: float = 0.02) -> T:
    """Call ``predicate`` until it returns something truthy and return that; TimeoutError
    naming ``what`` after ``timeout`` seconds. An exception from ``predicate`` (a process
    that died) ends the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@dataclass(frozen=True)
class Pinning:
    """Which cores the load generator and the servers run on."""

    loadgen: tuple[str, ...]
    server: tuple[str, ...]
    note: str

    @classmethod
    def detect(cls) -> Pinning:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if len(cores) >= 2 and shutil.which("taskset"):
            load, serve = cores[0], cores[1]
            return cls(("taskset", "-c", str(load)), ("taskset", "-c", str(serve)),
                       f"load generator pinned to core {load}, every server to core {serve}")
        why = "taskset is missing" if len(cores) >= 2 else f"only {len(cores) or '?'} core(s)"
        return cls((), (), f"NOT PINNED ({why}): load generator and servers share the CPU, "
                           "so figures are pessimistic and noisier")


def cpu_share(before: float | None, after: float | None, seconds: float) -> float | None:
    """CPU seconds per second between two ``cpu_seconds`` readings (1.0 = one core);
    None if either reading is unknown."""
    return None if before is None or after is None or not seconds else (after - before) / seconds


class Job:
    """A process in its own process group, logging to a file; a context manager that stops
    it (and whatever it spawned) on the way out."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            list(argv), cwd=REPO, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **SERVER_ENV})

    def __enter__(self) -> Job:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def check_alive(self, during: str) -> None:
        """RuntimeError with the log tail if the process has exited."""
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode} {during}; "
                               f"log tail:\n{self.log_tail()}")

    def cpu_seconds(self) -> float | None:
        """CPU time used so far by the process (``taskset`` execs it: same pid)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        # utime, stime, cutime, cstime: fields 14-17 of stat(5), 12-15 after "pid (comm)"
        return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers in the group, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._log.close()


class Server(Job):
    """A server on a loopback port; entering it as a context manager waits until it is ready
    (and stops it if it never gets there)."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, port: int,
                 ready_path: str = "/readyz", ready_timeout: float = READY_TIMEOUT_S) -> None:
        super().__init__(name, argv, log_path)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        self.ready_timeout = ready_timeout

    def __enter__(self) -> Server:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        """Until ``ready_path`` answers 200: RuntimeError with the log tail if the process
        exits first, TimeoutError with it after ``ready_timeout`` seconds."""
        def ready() -> bool:
            self.check_alive("before it was ready")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as response:
                    return response.status == 200
            except OSError:  # refused, reset, timed out, or an HTTPError such as 503
                return False

        try:
            wait_until(ready, self.ready_timeout, f"{self.name} to answer {self.ready_path} "
                                                  "with 200", interval=0.1)
        except TimeoutError as error:
            raise TimeoutError(f"{error}; log tail:\n{self.log_tail()}") from None


def terminate_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so every ``finally`` (server cleanup) runs."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def git_commit() -> str:
    """The commit measured, ``+dirty`` if tracked files differ from it."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if proc.returncode == 0:
            return proc.stdout.strip() + ("+dirty" if dirty else "")
    return "?"


def machine() -> str:
    """CPU model, cores and memory, for reports."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} vCPU {model}, {memory:.0f} GB RAM"
