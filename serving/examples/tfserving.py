"""TF Serving's own test models (its ``testdata``), rebuilt by our own code.

The suite checks the gateway against TF Serving's answers on exactly these models, but a
clone of this repository does not have TF Serving's files: ``make models`` builds
equivalents into ``models/tfserving/`` under the originals' folder names. Each builder
mirrors the generator TF Serving used (``tensorflow_serving/servables/tensorflow/testdata/
saved_model_half_plus_two.py``, Apache License 2.0) as it stood at the TensorFlow release
the original was written with, so the signature defs (method names, keys, tensor names,
dtypes and shapes: what metadata answers and request validation read) are the originals',
quirks included. ``tests/test_tfserving_equivalence.py`` compares them with the originals
where those are present.

The TF1 graph API on purpose: these are TF1 SavedModels (a graph run in a Session, no
object graph), the kind TF Serving's tests exercise. TensorFlow is imported inside the
builders only, so ``serving.examples.build`` imports without it.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ASSET_FILE = "foo.txt"
ASSET_CONTENTS = "asset-file-contents"

Signatures = dict[str, Any]
"""Signature name -> ``SignatureDef`` proto."""


def _export(export_dir: Path, make_graph: Callable[[], Signatures]) -> None:
    """Save the graph ``make_graph`` builds, plus the generator's foo.txt asset, in ``export_dir``.

    The asset comes with the generator's main op, which assigns the asset's name to a
    variable outside the checkpoint: it makes loaders copy an asset and run an init op.
    ``export_dir`` must not exist yet (the Builder's rule).
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default() as graph, v1.Session(graph=graph) as session, \
            tempfile.TemporaryDirectory() as source:
        signatures = make_graph()
        asset = Path(source) / ASSET_FILE
        asset.write_text(ASSET_CONTENTS)
        v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, tf.constant(str(asset)))
        filename = v1.Variable(ASSET_FILE, name="filename_tensor", trainable=False, collections=[])
        main_op = tf.group(filename.assign(ASSET_FILE))
        session.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(str(export_dir))
        builder.add_meta_graph_and_variables(
            session, [v1.saved_model.tag_constants.SERVING], signature_def_map=signatures,
            assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS), main_op=main_op)
        builder.save()


def _parse_examples(serialized: Any, with_x2: bool) -> dict[str, Any]:
    """Features ``x`` (and ``x2``, default 0) of serialized tf.Examples, each [batch, 1].

    TF 1.x inferred [batch, 1] from the feature spec; today's parse_example leaves the shape
    unknown for an input of unknown rank, so it is stated here (signatures declare it).
    """
    import tensorflow as tf

    spec = {"x": tf.io.FixedLenFeature([1], tf.float32)}
    if with_x2:
        spec["x2"] = tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])
    parsed = tf.compat.v1.io.parse_example(serialized, spec)
    for tensor in parsed.values():
        tensor.set_shape([None, 1])
    return parsed


def _signature(method: str, inputs: dict[str, Any], outputs: dict[str, Any]) -> Any:
    import tensorflow as tf

    return tf.compat.v1.saved_model.signature_def_utils.build_signature_def(inputs, outputs, method)


def _predict(x: Any, y: Any) -> Any:
    return _signature("tensorflow/serving/predict", {"x": x}, {"y": y})


def _regress(inputs: Any, outputs: Any) -> Any:
    return _signature("tensorflow/serving/regress", {"inputs": inputs}, {"outputs": outputs})


def _classify(inputs: Any, scores: Any) -> Any:
    return _signature("tensorflow/serving/classify", {"inputs": inputs}, {"scores": scores})


def _info(tensor: Any) -> Any:
    """TensorInfo with name, dtype and shape, as TF 1.1 and later write it."""
    import tensorflow as tf

    return tf.compat.v1.saved_model.utils.build_tensor_info(tensor)


def _tf1_0_info(tensor: Any, dtype: Any = None) -> Any:
    """TensorInfo as TF 1.0 wrote it: name and dtype, no shape."""
    from tensorflow.core.protobuf import meta_graph_pb2

    return meta_graph_pb2.TensorInfo(name=tensor.name,
                                     dtype=(dtype or tensor.dtype).as_datatype_enum)


def build_half_plus_two_cpu(export_dir: Path) -> None:
    """``saved_model_half_plus_two_cpu`` (the generator at TF 1.14, ``--device=cpu``).

    y = 0.5x + 2, y2 = 0.5x + 3, y3 = 0.5x2 + 3 (y3 with its own variables a2 and c2).
    """
    import tensorflow as tf

    v1 = tf.compat.v1

    def graph() -> Signatures:
        with tf.device("/cpu:0"):
            a = v1.Variable(0.5, name="a")
            b = v1.Variable(2.0, name="b")
            c = v1.Variable(3.0, name="c")
            tf_example = v1.placeholder(tf.string, name="tf_example")
            parsed = _parse_examples(tf_example, with_x2=True)
            x = tf.identity(parsed["x"], name="x")
            y = tf.identity(tf.add(tf.multiply(a, x), b), name="y")
            y2 = tf.identity(tf.add(tf.multiply(a, x), c), name="y2")
            x2 = tf.identity(parsed["x2"], name="x2")
            a2 = v1.Variable(0.5, name="a2")
            c2 = v1.Variable(3.0, name="c2")
            y3 = tf.identity(tf.add(tf.multiply(a2, x2), c2), name="y3")
        return {
            "regress_x_to_y": _regress(_info(tf_example), _info(y)),
            "regress_x_to_y2": _regress(_info(tf_example), _info(y2)),
            "regress_x2_to_y3": _regress(_info(x2), _info(y3)),
            "classify_x_to_y": _classify(_info(tf_example), _info(y)),
            "serving_default": _predict(_info(x), _info(y)),
        }

    _export(export_dir, graph)


def build_half_plus_two_2_versions(export_dir: Path) -> None:
    """Either version of ``saved_model_half_plus_two_2_versions`` (TF 1.1; both the same).

    y = 0.5x + 2, y2 = 0.5x + 3, y3 = 0.5x2 + 3 on shared variables, and one signature more
    than the cpu model: ``classify_x2_to_y3``. The original's ``legacy_init_op`` is stored
    by today's Builder as the main op; loaders run either.
    """
    import tensorflow as tf

    v1 = tf.compat.v1

    def graph() -> Signatures:
        a = v1.Variable(0.5, name="a")
        b = v1.Variable(2.0, name="b")
        c = v1.Variable(3.0, name="c")
        tf_example = v1.placeholder(tf.string, name="tf_example")
        parsed = _parse_examples(tf_example, with_x2=True)
        x = tf.identity(parsed["x"], name="x")
        y = tf.add(tf.multiply(a, x), b, name="y")
        y2 = tf.add(tf.multiply(a, x), c, name="y2")
        x2 = tf.identity(parsed["x2"], name="x2")
        y3 = tf.add(tf.multiply(a, x2), c, name="y3")
        return {
            "regress_x_to_y": _regress(_info(tf_example), _info(y)),
            "regress_x_to_y2": _regress(_info(tf_example), _info(y2)),
            "regress_x2_to_y3": _regress(_info(x2), _info(y3)),
            "classify_x_to_y": _classify(_info(tf_example), _info(y)),
            "classify_x2_to_y3": _classify(_info(x2), _info(y3)),
            "serving_default": _predict(_info(x), _info(y)),
        }

    _export(export_dir, graph)


def build_half_plus_three(export_dir: Path) -> None:
    """``saved_model_half_plus_three`` (TF 1.0): y = 0.5x + 3.

    Also y2 = 0.5x2 + 3 on a separate placeholder x2, which no signature uses. Its two
    signatures have TF 1.0's form, kept because metadata and validation read them: no
    shapes, a regress signature named ``tensorflow/serving/regress`` whose output is
    ``Identity:0``, and its serialized-Example input ``tf_example:0`` declared DT_FLOAT.
    """
    import tensorflow as tf

    v1 = tf.compat.v1

    def graph() -> Signatures:
        a = v1.Variable(0.5, name="a")
        b = v1.Variable(3.0, name="b")
        c = v1.Variable(3.0, name="c")
        tf_example = v1.placeholder(tf.string, name="tf_example")
        x = tf.identity(_parse_examples(tf_example, with_x2=False)["x"], name="x")
        y = tf.add(tf.multiply(a, x), b, name="y")
        x2 = v1.placeholder(tf.float32, name="x2")
        tf.add(tf.multiply(a, x2), c, name="y2")
        regress_output = tf.identity(y, name="Identity")
        return {
            "serving_default": _predict(_tf1_0_info(x), _tf1_0_info(y)),
            "tensorflow/serving/regress": _regress(_tf1_0_info(tf_example, tf.float32),
                                                   _tf1_0_info(regress_output)),
        }

    _export(export_dir, graph)


MODELS: dict[str, dict[str, Callable[[Path], None]]] = {
    "saved_model_half_plus_two_cpu": {"00000123": build_half_plus_two_cpu},
    "saved_model_half_plus_three": {"00000123": build_half_plus_three},
    "saved_model_half_plus_two_2_versions": {
        "00000123": build_half_plus_two_2_versions,
        "00000124": build_half_plus_two_2_versions,
    },
}
"""Base folder -> version folder -> builder, named as in TF Serving's testdata."""
