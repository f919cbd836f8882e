"""The Google Cloud Pub/Sub emulator, started and stopped around a block (tests, benchmarks).

It comes with gcloud (a component: ``google-cloud-cli-pubsub-emulator`` in Google's apt
repository) and runs on Java; ``missing`` says which of those is absent and how to get it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from loadtests.support.processes import Server, free_port

GOOGLE_APT = "from Google's apt repository, https://packages.cloud.google.com/apt cloud-sdk"


def missing() -> tuple[str, str] | None:
    """(what is missing, how to install it), or None when the emulator can start."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return "gcloud is not installed", f"apt-get install -y google-cloud-cli ({GOOGLE_APT})"
    # Components live under the SDK root: SDK/bin/gcloud, SDK/platform/pubsub-emulator.
    if not (Path(gcloud).resolve().parents[1] / "platform" / "pubsub-emulator").is_dir():
        return ("gcloud's Pub/Sub emulator component is not installed",
                f"apt-get install -y google-cloud-cli-pubsub-emulator ({GOOGLE_APT}), "
                "or: gcloud components install pubsub-emulator")
    if shutil.which("java") is None:
        return ("java (the Pub/Sub emulator runs on it) is not installed",
                "apt-get install -y openjdk-17-jre-headless")
    return None


@contextlib.contextmanager
def pubsub_emulator(project: str, timeout_s: float = 60.0) -> Iterator[str]:
    """Run the emulator on a free loopback port with PUBSUB_EMULATOR_HOST set; yield host:port.

    Anything missing raises RuntimeError saying what to install; so does an emulator that
    exits before it answers (with its log tail).
    """
    gap = missing()
    if gap is not None:
        raise RuntimeError(f"{gap[0]}: {gap[1]}")
    port = free_port()
    host = f"127.0.0.1:{port}"
    argv = ["gcloud", "beta", "emulators", "pubsub", "start", f"--host-port={host}",
            f"--project={project}"]
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    # The emulator answers "Ok" on / once it serves; it spawns a java child, which the
    # launcher stops with it (the whole process group).
    with tempfile.TemporaryDirectory(prefix="pubsub-emulator-") as logs, \
            Server("Pub/Sub emulator", argv, Path(logs) / "emulator.log", port, ready_path="/",
                   ready_timeout=timeout_s):
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        try:
            yield host
        finally:
            if previous is None:
                os.environ.pop("PUBSUB_EMULATOR_HOST", None)
            else:
                os.environ["PUBSUB_EMULATOR_HOST"] = previous
