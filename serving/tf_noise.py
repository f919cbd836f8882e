"""TensorFlow's start-up noise, off unless asked for (``--verbose``).

On a CPU machine, importing TensorFlow and its first look for devices print lines that tell a
server's operator nothing: absl's "All log messages before absl::InitializeLog()", "Could not
find cuda drivers", the CPU instruction note, "failed call to cuInit: ... CUDA error". Some
come from C++ static initialisers, before ``TF_CPP_MIN_LOG_LEVEL`` is read, so no setting
hides them. ``import_tensorflow`` sets ``TF_CPP_MIN_LOG_LEVEL=2`` (TensorFlow's C++ INFO and
WARNING lines off, its errors kept) unless the environment already sets it, imports
TensorFlow and lists its devices with file descriptor 2 caught, then writes back every caught
line except those above (matched by their exact source files and texts). TensorFlow's Python
logger goes to WARNING, and the one deprecation warning our own TF1 loading raises
(``tf.compat.v1.saved_model.load``: TensorFlow has no undeprecated way to load a SavedModel
into a Session) is dropped by its text. With ``verbose`` nothing is dropped and the level is 0.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import tempfile

NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:. ]+\d+ (cudart_stub\.cc:\d+\] Could not find cuda drivers"
    r"|cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized"
    r"|cuda_platform\.cc:\d+\] failed call to cuInit"
    r"|cuda_(dnn|fft|blas)\.cc:\d+\] Unable to register cu\w+ factory"
    r"|computation_placer\.cc:\d+\] computation placer already registered).*"
    r"|To enable the following instructions: .*, in other operations, rebuild TensorFlow with the "
    r"appropriate compiler flags\.")
"""A whole line of TensorFlow's start-up noise (the CPU note is two lines)."""

DEPRECATED_TF1_LOAD = "load (from tensorflow.python.saved_model.loader_impl) is deprecated"


def import_tensorflow(verbose: bool = False) -> None:
    """Import TensorFlow and probe its devices (where its noise comes from), once, before any
    other thread writes to stderr."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")
    if verbose:
        import tensorflow as tf

        tf.get_logger().setLevel(logging.INFO)
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            _write_back(caught.read().decode(errors="replace"))
    logger = tf.get_logger()
    logger.setLevel(logging.WARNING)
    logger.addFilter(_not_our_deprecated_call)


def _not_our_deprecated_call(record: logging.LogRecord) -> bool:
    return DEPRECATED_TF1_LOAD not in record.getMessage()


def _write_back(text: str) -> None:
    kept = [line for line in text.splitlines(keepends=True) if not NOISE.fullmatch(line.rstrip("\n"))]
    if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()
