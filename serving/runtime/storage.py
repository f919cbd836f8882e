"""Model files wherever they live: local paths, ``gs://`` and ``s3://`` object stores.

The one file-system layer of the model path (version listing, loading, the config file),
used by the server and the pipelines alike. Local paths go through ``os``; ``gs://`` through
gcsfs and ``s3://`` through s3fs (fsspec), imported only when such a path is used. Any other
``scheme://`` is handed to fsspec as it is.

Why not TensorFlow's ``tf.io.gfile``: TensorFlow has had no ``s3://`` since 2.7, and its
``gs://`` plugin (tensorflow-io-gcs-filesystem 0.37.1, the last release) does not load into
TensorFlow 2.21 (``undefined symbol: TF_VLog``); it also ignores the emulator variables.
A remote version is therefore copied to a local directory (``local_copy``) and loaded from
there; the copy is removed when the version is dropped (``remove_copy``).

Endpoints and credentials follow each store's standard variables:

- GCS: ``STORAGE_EMULATOR_HOST`` (an emulator, reached anonymously); otherwise Application
  Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, workload identity, gcloud).
- S3: ``AWS_ENDPOINT_URL`` (or TF Serving's ``S3_ENDPOINT``, with ``S3_USE_HTTPS=0`` for
  plain HTTP), and boto's credential chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
  ``AWS_PROFILE``, instance roles); ``AWS_REGION``/``AWS_DEFAULT_REGION``.

Object stores have no atomic rename, so a remote version directory counts only once its
``saved_model.pb`` is there: upload it last.
"""
from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
CACHE_PREFIX = "tfgw-model-"

_LOCK = threading.Lock()
_FILESYSTEMS: dict[tuple[int, str, str | None], Any] = {}


def scheme(path: str | os.PathLike[str]) -> str:
    """``gs``, ``s3``, ... for a URL; ``""`` for a local path."""
    text = os.fspath(path)
    head, sep, _ = text.partition("://")
    return head.lower() if sep and head.isidentifier() else ""


def is_remote(path: str | os.PathLike[str]) -> bool:
    return scheme(path) != ""


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for local paths and URLs alike."""
    return posixpath.join(base, *parts) if is_remote(base) else os.path.join(base, *parts)


def _filesystem(kind: str) -> Any:
    """One fsspec file system per scheme, endpoint and process (a forked worker makes its own)."""
    endpoint = {"gs": lambda: os.environ.get("STORAGE_EMULATOR_HOST"),
                "s3": lambda: s3_endpoint(os.environ)}.get(kind, lambda: None)()
    key = (os.getpid(), kind, endpoint)
    with _LOCK:
        if key not in _FILESYSTEMS:
            _FILESYSTEMS[key] = _make_filesystem(kind)
        return _FILESYSTEMS[key]


def _make_filesystem(kind: str) -> Any:
    # No listings cache: version polling must see a new version as soon as it is there.
    common = {"use_listings_cache": False, "skip_instance_cache": True}
    if kind == "gs":
        # gcsfs' default class adds an experimental gRPC bucket-type probe that emulators
        # do not answer (a 60 s timeout per call); the JSON-API class is all we need.
        from gcsfs.core import GCSFileSystem

        token = "anon" if os.environ.get("STORAGE_EMULATOR_HOST") else None
        return GCSFileSystem(token=token, **common)
    if kind == "s3":
        from s3fs import S3FileSystem

        endpoint = s3_endpoint(os.environ)
        client_kwargs = {"endpoint_url": endpoint} if endpoint else {}
        return S3FileSystem(client_kwargs=client_kwargs, **common)
    import fsspec

    return fsspec.filesystem(kind, **common)


def s3_endpoint(env: Any) -> str | None:
    """``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, else TF Serving's ``S3_ENDPOINT``
    (host:port, HTTPS unless ``S3_USE_HTTPS=0``); None: AWS itself."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if env.get(name):
            return env[name]
    endpoint = env.get("S3_ENDPOINT")
    if not endpoint:
        return None
    if "://" in endpoint:
        return endpoint
    return ("http://" if env.get("S3_USE_HTTPS", "1") == "0" else "https://") + endpoint


@contextmanager
def _errors_as_oserror(path: str) -> Iterator[None]:
    """A store's own errors (gcsfs' HttpError, a refused connection) as OSError, which
    callers handle as they handle a local file system's."""
    try:
        yield
    except OSError:
        raise
    except Exception as error:  # noqa: BLE001 - translated at the boundary, with its text
        raise OSError(f"{path}: {type(error).__name__}: {error}") from error


def _remote(path: str) -> tuple[Any, str]:
    """(file system, path without the scheme) of a URL."""
    kind = scheme(path)
    return _filesystem(kind), path.split("://", 1)[1].rstrip("/")


def child_dirs(path: str) -> list[str]:
    """Names of the directories directly under ``path``; FileNotFoundError if it is not a
    directory (an empty or missing prefix, on an object store)."""
    if not is_remote(path):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{path} does not exist or is not a directory")
        return [entry.name for entry in os.scandir(path) if entry.is_dir()]
    with _errors_as_oserror(path):
        fs, key = _remote(path)
        entries = fs.ls(key, detail=True)
    if not entries:
        raise FileNotFoundError(f"{path} does not exist or is empty")
    return [posixpath.basename(e["name"].rstrip("/")) for e in entries if e.get("type") == "directory"]


def holds_saved_model(path: str) -> bool:
    """Whether the version directory ``path`` has its ``saved_model.pb`` (remote only: a
    local directory always counts, as in TF Serving)."""
    return not is_remote(path) or has_saved_model_file(path)


def has_saved_model_file(path: str) -> bool:
    """Whether ``saved_model.pb`` (or ``.pbtxt``) is directly in ``path``."""
    if not is_remote(path):
        return any(os.path.isfile(os.path.join(path, name)) for name in SAVED_MODEL_FILES)
    with _errors_as_oserror(path):
        fs, key = _remote(path)
        names = {posixpath.basename(e.rstrip("/")) for e in fs.ls(key, detail=False)}
    return any(name in names for name in SAVED_MODEL_FILES)


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The whole file (a config file, a SavedModel proto); OSError as ``open`` raises."""
    path = os.fspath(path)
    if not is_remote(path):
        with open(path, "rb") as handle:
            return handle.read()
    with _errors_as_oserror(path):
        fs, key = _remote(path)
        return fs.cat_file(key)


def local_copy(path: str) -> str:
    """A local directory holding the version directory ``path``: ``path`` itself when it is
    local, else a fresh download of it (remove it with ``remove_copy``)."""
    if not is_remote(path):
        return path
    target = tempfile.mkdtemp(prefix=CACHE_PREFIX)
    try:
        with _errors_as_oserror(path):
            fs, key = _remote(path)
            fs.get(key + "/", target + "/", recursive=True)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def remove_copy(local: str, source: str) -> None:
    """Remove what ``local_copy(source)`` downloaded (nothing for a local source)."""
    if local != source and os.path.basename(local).startswith(CACHE_PREFIX):
        shutil.rmtree(local, ignore_errors=True)
