"""Version directories under a model base path (TF Serving's layout: ``BASE/123/``).

The one listing used by the server, the pipelines and the benchmarks. It goes through
``serving.runtime.storage``, so a base path may be local, ``gs://`` or ``s3://``; listing
needs no TensorFlow.
"""
from __future__ import annotations

import os
import posixpath
import threading

from serving.runtime import storage


def version_dirs(base_path: str | os.PathLike[str]) -> dict[int, str]:
    """Version number -> full path of each numeric directory under ``base_path``
    (``00000123`` is version 123). A missing base path raises FileNotFoundError.

    On an object store a version directory counts once its ``saved_model.pb`` is there
    (object stores have no atomic rename: upload it last)."""
    base = os.fspath(base_path)
    if storage.is_remote(base):
        base = base.rstrip("/")
    found: dict[int, str] = {}
    for name in storage.child_dirs(base):
        if name.isdigit():
            found[int(name)] = storage.join(base, name)
    if storage.is_remote(base):
        _forget_removed(base, set(found.values()))
    return {v: path for v, path in found.items() if _complete(path)}


_COMPLETE: set[str] = set()
"""Remote version directories already seen with their saved_model.pb (checked once each)."""
_COMPLETE_LOCK = threading.Lock()


def _complete(path: str) -> bool:
    if not storage.is_remote(path):
        return True
    with _COMPLETE_LOCK:
        if path in _COMPLETE:
            return True
    if not storage.holds_saved_model(path):
        return False
    with _COMPLETE_LOCK:
        _COMPLETE.add(path)
    return True


def _forget_removed(base: str, present: set[str]) -> None:
    """A version directory removed from the bucket is checked afresh if it comes back."""
    with _COMPLETE_LOCK:
        _COMPLETE.difference_update({p for p in _COMPLETE if posixpath.dirname(p) == base and p not in present})


def layout_hint(base_path: str) -> str:
    """What to change when ``base_path`` has no version folder, for the log; empty when the
    listing itself fails (its error says why)."""
    base = os.fspath(base_path).rstrip("/") or "/"
    try:
        names = storage.child_dirs(base)
        if storage.has_saved_model_file(base):
            parent = base.rsplit("/", 1)[0] if "/" in base.split("://")[-1] else "its parent folder"
            return f"{base} is a version folder (it holds saved_model.pb): set the base path to {parent}; {LAYOUT}"
    except FileNotFoundError:
        return f"{base} does not exist or is empty; {LAYOUT}"
    except OSError:
        return ""
    if names:
        shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
        return f"none of its folders ({shown}) is named by a number; {LAYOUT}"
    return f"put the SavedModel in {base}/1; {LAYOUT}"


LAYOUT = ("the base path is the model's folder, with one numbered folder per version (TF Serving's layout: "
          "BASE/1/saved_model.pb)")
