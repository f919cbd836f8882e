"""Version directories under a model base path (TF Serving's layout: ``BASE/123/``).

The one listing used by the server, the pipelines and the benchmarks. It goes through
``tf.io.gfile``, so a base path may be local or any file system TensorFlow has a plugin for.
"""
from __future__ import annotations

import posixpath


def version_dirs(base_path: str) -> dict[int, str]:
    """Version number -> full path of each numeric directory under ``base_path``
    (``00000123`` is version 123). A missing base path raises FileNotFoundError."""
    import tensorflow as tf

    base = str(base_path)
    if not tf.io.gfile.isdir(base):
        raise FileNotFoundError(f"model base path {base} does not exist or is not a directory")
    found: dict[int, str] = {}
    for entry in tf.io.gfile.listdir(base):
        name = entry.rstrip("/")
        path = posixpath.join(base, name)
        if name.isdigit() and tf.io.gfile.isdir(path):
            found[int(name)] = path
    return found

