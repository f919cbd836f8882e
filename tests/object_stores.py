"""Real object-store emulators for the tests, each on a free loopback port: a GCS emulator
(``gcp-storage-emulator``, pure Python) and an S3 server (moto's server mode), started as
processes by ``loadtests.support.processes.Job`` and stopped with it.

``Store`` knows its emulator's environment (what a gateway or a pipeline reads: the
standard emulator variables and dummy credentials) and uploads with a client of its own,
built from explicit endpoints, so uploads do not go through the code under test.
"""
from __future__ import annotations

import contextlib
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.support.processes import Job, free_port, wait_until

SCHEMES = ("gs", "s3")
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}


@dataclass
class Store:
    scheme: str
    endpoint: str  # http://127.0.0.1:PORT
    env: dict[str, str]
    fs: Any  # an fsspec file system talking to the emulator directly

    def bucket(self) -> str:
        """A new, empty bucket; its URL (``gs://NAME``)."""
        name = f"tfgw-{uuid.uuid4().hex[:12]}"
        self.fs.mkdir(name)
        return f"{self.scheme}://{name}"

    def upload_dir(self, local: Path, url: str) -> None:
        """Upload a version directory file by file, ``saved_model.pb`` last (object stores
        have no atomic rename: a version counts once its saved_model.pb is there)."""
        files = sorted((p for p in local.rglob("*") if p.is_file()),
                       key=lambda p: (p.name == "saved_model.pb", str(p)))
        for path in files:
            self.fs.put_file(str(path), _key(url) + "/" + path.relative_to(local).as_posix())

    def write_text(self, url: str, text: str) -> None:
        self.fs.pipe_file(_key(url), text.encode())

    def remove(self, url: str) -> None:
        self.fs.rm(_key(url), recursive=True)


def _key(url: str) -> str:
    return url.split("://", 1)[1].rstrip("/")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answers, if not with 200
    except OSError:
        return False


@contextlib.contextmanager
def running_store(scheme: str, log_dir: Path) -> Iterator[Store]:
    """A started emulator for ``scheme`` (``gs`` or ``s3``), stopped on the way out."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    if scheme == "gs":
        argv = [sys.executable, "-c", "from gcp_storage_emulator.__main__ import main; main()",
                "start", "--host=127.0.0.1", f"--port={port}", "--in-memory"]
        probe = endpoint + "/storage/v1/b?project=test"
    else:
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        probe = endpoint + "/"
    with Job(f"{scheme} emulator", argv, log_dir / f"{scheme}-emulator.log") as job:
        def up() -> bool:
            job.check_alive("while starting")
            return _answers(probe)

        wait_until(up, timeout=60, what=f"the {scheme} emulator on port {port}", interval=0.1)
        if scheme == "gs":
            from gcsfs.core import GCSFileSystem

            env = {"STORAGE_EMULATOR_HOST": endpoint}
            fs = GCSFileSystem(token="anon", endpoint_url=endpoint, use_listings_cache=False,
                               skip_instance_cache=True)
        else:
            from s3fs import S3FileSystem

            env = {"AWS_ENDPOINT_URL": endpoint, **S3_ENV}
            fs = S3FileSystem(key="testing", secret="testing", use_listings_cache=False,
                              skip_instance_cache=True,
                              client_kwargs={"endpoint_url": endpoint})
        yield Store(scheme, endpoint, env, fs)
