"""TF Serving's ``--tensorflow_intra_op_parallelism`` and ``--tensorflow_inter_op_parallelism``
(``Settings.op_parallelism``) applied to both of TensorFlow's runtimes.

A TF1 Session takes them in its ``ConfigProto`` (``session_config``), as TF Serving's
session bundles do. TF2 functions run in the eager runtime, which takes them from
``tf.config.threading`` (``apply_to_eager``); TensorFlow accepts that only before its runtime
has started (before the first op), so the process applies it once, at start, before any
model loads. Both share TensorFlow's process-wide pools: the intra-op pool is created once,
by whichever of the two starts first, so both get the same numbers. 0 leaves TensorFlow's
default (one thread per core for each pool).
"""
from __future__ import annotations

import tensorflow as tf
from tensorflow.core.protobuf import config_pb2


def session_config(intra_op: int, inter_op: int) -> config_pb2.ConfigProto | None:
    """The ``ConfigProto`` of every TF1 Session the gateway creates; None (TensorFlow's
    defaults) when both are 0."""
    if not intra_op and not inter_op:
        return None
    return config_pb2.ConfigProto(intra_op_parallelism_threads=intra_op,
                                  inter_op_parallelism_threads=inter_op)


def apply_to_eager(intra_op: int, inter_op: int) -> None:
    """Size the eager runtime's pools (TF2 functions). Call before any TensorFlow op runs:
    afterwards TensorFlow raises RuntimeError ("cannot be modified after initialization")."""
    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
