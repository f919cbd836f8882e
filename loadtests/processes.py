"""Servers under test as subprocesses, and which cores the load generator and they run on.

Shared by ``make bench`` (wrk) and ``make loadtest`` (Locust): each server runs in its own
process group, logs to a file, and is killed with its children on exit, failure, Ctrl-C or
SIGTERM.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

REPO = Path(__file__).resolve().parents[1]
SERVER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def log(message: str) -> None:
    """A progress line on stderr, named after the running program (bench, run, ...)."""
    program = Path(sys.argv[0]).stem
    print(f"[{program} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Pinning:
    """Which cores the load generator and the servers run on."""

    loadgen: tuple[str, ...]
    server: tuple[str, ...]
    note: str

    @classmethod
    def detect(cls) -> "Pinning":
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if len(cores) >= 2 and shutil.which("taskset"):
            load, serve = cores[0], cores[1]
            return cls(("taskset", "-c", str(load)), ("taskset", "-c", str(serve)),
                       f"load generator pinned to core {load}, every server to core {serve}")
        why = "taskset is missing" if len(cores) >= 2 else f"only {len(cores) or '?'} core(s)"
        return cls((), (), f"NOT PINNED ({why}): load generator and servers share the CPU, "
                           "so figures are pessimistic and noisier")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A server subprocess in its own process group, logging to a file."""

    def __init__(self, name: str, argv: Sequence[str], port: int, log_path: Path) -> None:
        self.name = name
        self.port = port
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            list(argv), cwd=REPO, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **SERVER_ENV})

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def cpu_seconds(self) -> float | None:
        """CPU time used so far by the server (``taskset`` execs it: same pid)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        # utime, stime, cutime, cstime: fields 14-17 of stat(5), 12-15 after "pid (comm)"
        return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def wait_ready(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before "
                                   f"it was ready; log tail:\n{self.log_tail()}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                with urllib.request.urlopen(self.url + path, timeout=2) as response:
                    if response.status == 200:
                        return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s; log tail:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers in the group, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._log.close()


@contextlib.contextmanager
def running(name: str, argv: Sequence[str], port: int, log_path: Path) -> Iterator[Server]:
    server = Server(name, argv, port, log_path)
    try:
        yield server
    finally:
        server.stop()


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
