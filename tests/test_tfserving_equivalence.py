"""Our builds of TF Serving's test models (serving/examples/tfserving.py) against its originals.

The suite runs the gateway on our builds, since a clone has no TF Serving files. Where the
originals are at hand (``tfserving_originals``: skipped without them, failed under
``CI=true``) these tests show the builds equal them: the same signature defs, assets and
variables, and the same answers through the gateway's loader; and the repository's copies of
TF Serving's text fixtures are its files byte for byte. The formula test needs no originals.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.examples.tfserving import MODELS
from serving.runtime import savedmodel
from tests.conftest import TFSERVING_FILES

VERSIONS = [f"{model}/{version}" for model, versions in MODELS.items() for version in versions]
TEXT_FIXTURES = sorted(p.name for p in TFSERVING_FILES.iterdir() if p.name != "README.md")

X = np.array([[2.0], [3.0], [4.0], [-1.5], [0.0], [1e6]], np.float32)
"""Fed to float inputs, as [n, 1] and flat (TF Serving's tests feed [3] to x of [-1, 1])."""
EXAMPLE_ROWS: list[tuple[float, float | None]] = [(2.0, None), (-1.5, 4.0), (0.25, -8.0), (1e6, 0.5)]
"""(x, x2) of the tf.Examples fed to Example inputs; x2 left out takes its default, 0."""
EXAMPLE_FEATURES = {
    "x": np.array([[x] for x, _ in EXAMPLE_ROWS], np.float32),
    "x2": np.array([[x2 or 0.0] for _, x2 in EXAMPLE_ROWS], np.float32),
}

PLUS_TWO = {
    "serving_default": ("x", 2.0),
    "classify_x_to_y": ("x", 2.0),
    "regress_x_to_y": ("x", 2.0),
    "regress_x_to_y2": ("x", 3.0),
    "regress_x2_to_y3": ("x2", 3.0),
}
FORMULAS: dict[str, dict[str, tuple[str, float]]] = {
    "saved_model_half_plus_two_cpu": PLUS_TWO,
    "saved_model_half_plus_two_2_versions": {**PLUS_TWO, "classify_x2_to_y3": ("x2", 3.0)},
    "saved_model_half_plus_three": {"serving_default": ("x", 3.0),
                                    "tensorflow/serving/regress": ("x", 3.0)},
}
"""Model -> signature -> (feature, b): the signature's one output is 0.5 * feature + b."""


def example(x: float, x2: float | None) -> bytes:
    features = {"x": x} if x2 is None else {"x": x, "x2": x2}
    return tf.train.Example(features=tf.train.Features(feature={
        name: tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        for name, value in features.items()
    })).SerializeToString()


EXAMPLES = np.array([example(x, x2) for x, x2 in EXAMPLE_ROWS], dtype=object)


def is_example_input(info: meta_graph_pb2.TensorInfo) -> bool:
    """By tensor name: half_plus_three declares its Example input DT_FLOAT."""
    return info.name == "tf_example:0"


def serving_meta_graph(version_dir: Path) -> meta_graph_pb2.MetaGraphDef:
    model = saved_model_pb2.SavedModel()
    model.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    (meta_graph,) = [g for g in model.meta_graphs if "serve" in g.meta_info_def.tags]
    return meta_graph


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def checkpoint(version_dir: Path) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(version_dir / "variables" / "variables"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


@pytest.mark.parametrize("version", VERSIONS)
def test_signature_defs_are_the_originals(tfserving_dir: Path, tfserving_originals: Path,
                                          version: str) -> None:
    ours = serving_meta_graph(tfserving_dir / version)
    theirs = serving_meta_graph(tfserving_originals / version)
    # Text format, so a failure shows which field differs.
    assert {k: str(v) for k, v in ours.signature_def.items()} == {
        k: str(v) for k, v in theirs.signature_def.items()}
    assert list(ours.meta_info_def.tags) == list(theirs.meta_info_def.tags)
    assert not ours.object_graph_def.nodes and not theirs.object_graph_def.nodes  # both TF1


@pytest.mark.parametrize("version", VERSIONS)
def test_assets_and_variables_are_the_originals(tfserving_dir: Path, tfserving_originals: Path,
                                                version: str) -> None:
    ours, theirs = tfserving_dir / version, tfserving_originals / version
    assert files(ours / "assets") == files(theirs / "assets")
    assert not (ours / "assets.extra").exists() and not (theirs / "assets.extra").exists()
    ours_vars, theirs_vars = checkpoint(ours), checkpoint(theirs)
    assert sorted(ours_vars) == sorted(theirs_vars)
    for name, value in theirs_vars.items():
        np.testing.assert_array_equal(ours_vars[name], value, err_msg=name)


@pytest.mark.parametrize("version", VERSIONS)
def test_answers_are_the_originals(tfserving_dir: Path, tfserving_originals: Path,
                                   version: str) -> None:
    ours = savedmodel.load(tfserving_dir / version)
    theirs = savedmodel.load(tfserving_originals / version)
    assert sorted(ours.specs) == sorted(theirs.specs)
    for name in theirs.specs:
        (key, info), = theirs.signature_defs[name].inputs.items()
        feeds = [EXAMPLES] if is_example_input(info) else [X, X.ravel()]
        for feed in feeds:
            expected = theirs.run(name, {key: feed})
            answer = ours.run(name, {key: feed})
            assert answer.keys() == expected.keys(), name
            for output, value in expected.items():
                np.testing.assert_array_equal(answer[output], value, err_msg=f"{name} {output}")


@pytest.mark.parametrize("name", TEXT_FIXTURES)
def test_text_fixtures_are_tf_servings_files(tfserving_files: Path, tfserving_originals: Path,
                                             name: str) -> None:
    assert (tfserving_files / name).read_bytes() == (tfserving_originals / name).read_bytes()


@pytest.mark.parametrize("version", VERSIONS)
def test_our_models_compute_tf_servings_formulas(tfserving_dir: Path, version: str) -> None:
    """Every signature, including those the REST and gRPC tests do not call."""
    formulas = FORMULAS[version.split("/")[0]]
    model = savedmodel.load(tfserving_dir / version)
    assert sorted(model.specs) == sorted(formulas)
    for name, (feature, b) in formulas.items():
        (key, info), = model.signature_defs[name].inputs.items()
        if is_example_input(info):
            feed, values = EXAMPLES, EXAMPLE_FEATURES[feature]
        else:
            assert info.name == f"{feature}:0", name
            feed, values = X, X
        (output,) = model.run(name, {key: feed}).values()
        np.testing.assert_allclose(output, 0.5 * values + b, err_msg=name)
