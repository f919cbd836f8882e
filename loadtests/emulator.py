"""The Google Cloud Pub/Sub emulator, started and stopped around a block (tests, benchmarks)."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from typing import Iterator


@contextlib.contextmanager
def pubsub_emulator(project: str, timeout_s: float = 60.0) -> Iterator[str]:
    """Run the emulator on a free loopback port with PUBSUB_EMULATOR_HOST set; yield host:port.

    A missing gcloud raises: callers that need the emulator must fail, not skip.
    """
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise RuntimeError("gcloud (with the Pub/Sub emulator) is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    host = f"127.0.0.1:{port}"
    process = subprocess.Popen(
        [gcloud, "beta", "emulators", "pubsub", "start", f"--host-port={host}", f"--project={project}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    try:
        end = time.monotonic() + timeout_s
        while not _answers(host):
            if time.monotonic() > end or process.poll() is not None:
                raise RuntimeError(f"the Pub/Sub emulator did not start on {host}")
            time.sleep(0.1)
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        yield host
    finally:
        if previous is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = previous
        os.killpg(process.pid, signal.SIGTERM)  # gcloud spawns a java child
        process.wait(timeout=30)


def _answers(host: str) -> bool:
    try:
        return urllib.request.urlopen(f"http://{host}", timeout=1).read() == b"Ok\n"
    except OSError:
        return False
