"""The example models, as built by ``make models``: signatures, answers, warm-up, configs.

Real SavedModels, no mocks. The built models are a prerequisite, not an option: a missing
``models/`` folder fails the tests rather than skipping them.
"""
from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.examples import build, image, natality, shapes
from serving.settings import BatchingConfig
from tests.conftest import REPO

Signature = Callable[..., dict[str, tf.Tensor]]
"""A loaded SavedModel signature (a ConcreteFunction)."""


@pytest.fixture(scope="module")
def natality_fn(models_dir: Path) -> Signature:
    return tf.saved_model.load(str(models_dir / "natality" / "1")).signatures["serving_default"]


@pytest.fixture(scope="module")
def image_fn(models_dir: Path) -> Signature:
    path = models_dir / "image_classifier" / "1"
    return tf.saved_model.load(str(path)).signatures["serving_default"]


def predict_natality(fn: Signature, rows: dict[str, np.ndarray]) -> np.ndarray:
    return fn(**{k: tf.constant(v) for k, v in rows.items()})["weight_pounds"].numpy()


def specs(structure: dict) -> dict[str, tuple[tf.DType, list[int | None]]]:
    return {k: (v.dtype, v.shape.as_list()) for k, v in structure.items()}


# --- the formula, without TensorFlow --------------------------------------------------------

def test_example_modules_import_without_tensorflow() -> None:
    code = ("import sys, serving.examples.build, serving.examples.natality, "
            "serving.examples.image, serving.examples.shapes; "
            "assert 'tensorflow' not in sys.modules, 'tf imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_expected_weight_is_the_documented_formula() -> None:
    base = natality.expected_weight(["False"], [28.0], ["Single(1)"], [39.0])
    assert base.dtype == np.float32 and base.tolist() == [pytest.approx(7.5)]
    boy_twin = natality.expected_weight([b"True"], [38.0], [b"Twins(2)"], [41.0])
    assert boy_twin[0] == pytest.approx(7.5 + 0.25 - 1.4 + 2 * 0.15 + 10 * 0.015, abs=1e-5)
    rows = natality.sample_rows(10_000, seed=1)
    weights = natality.expected_weight(**rows)
    assert weights.shape == (10_000,) and weights.min() > 0.5 and weights.max() < 9.3
    with pytest.raises(ValueError, match="plurality"):
        natality.expected_weight(["True"], [30.0], ["Sextuplets(6)"], [39.0])


def test_sample_rows_are_valid_and_reproducible() -> None:
    rows = natality.sample_rows(500, seed=3)
    assert set(rows) == set(natality.INPUTS)
    assert set(rows["is_male"]) == set(natality.IS_MALE_VALUES)
    assert set(rows["plurality"]) == set(natality.PLURALITY_VALUES)
    for name, (lo, hi) in (("mother_age", natality.MOTHER_AGE_RANGE),
                           ("gestation_weeks", natality.GESTATION_WEEKS_RANGE)):
        assert rows[name].dtype == np.float32 and lo <= rows[name].min() <= rows[name].max() <= hi
    again = natality.sample_rows(500, seed=3)
    assert all(np.array_equal(rows[k], again[k]) for k in rows)


# --- natality SavedModel ----------------------------------------------------------------------

def test_natality_signature(natality_fn: Signature) -> None:
    _, inputs = natality_fn.structured_input_signature
    assert specs(inputs) == {
        "is_male": (tf.string, [None]), "mother_age": (tf.float32, [None]),
        "plurality": (tf.string, [None]), "gestation_weeks": (tf.float32, [None]),
    }
    assert specs(natality_fn.structured_outputs) == {"weight_pounds": (tf.float32, [None])}


def test_natality_predicts_the_formula(natality_fn: Signature) -> None:
    rows = natality.sample_rows(200, seed=7)
    error = np.abs(predict_natality(natality_fn, rows) - natality.expected_weight(**rows))
    assert error.max() <= natality.TOLERANCE_POUNDS, f"max error {error.max():.4f} lb"


def test_natality_rejects_unknown_category(natality_fn: Signature) -> None:
    rows = natality.sample_rows(2, seed=0)
    rows["plurality"][1] = "Sextuplets(6)"
    with pytest.raises(tf.errors.InvalidArgumentError, match="OOV"):
        predict_natality(natality_fn, rows)


@pytest.mark.parametrize("name", ["natality", "image_classifier"])
@pytest.mark.slow
def test_warmup_requests_run_on_the_model(models_dir: Path, name: str) -> None:
    path = models_dir / name / "1" / "assets.extra" / "tf_serving_warmup_requests"
    fn = tf.saved_model.load(str(path.parents[1])).signatures["serving_default"]
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
               for r in tf.data.TFRecordDataset(str(path))]
    sizes = []
    for record in records:
        request = record.predict_log.request
        assert request.model_spec.name == name
        assert request.model_spec.signature_name == "serving_default"
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        outputs = {k: v.numpy() for k, v in fn(**inputs).items()}
        if name == "natality":
            np.testing.assert_allclose(outputs["weight_pounds"], natality.expected_weight(**inputs),
                                       atol=natality.TOLERANCE_POUNDS)
        sizes.append(len(next(iter(outputs.values()))))
    assert sorted(set(sizes)) == [1, 8] and len(records) == len(build.WARMUP_BATCH_SIZES)


# --- image classifier -------------------------------------------------------------------------

def test_sample_jpegs_are_reproducible_jpegs() -> None:
    jpegs = image.sample_jpegs(3, seed=5, size=64)
    assert jpegs == image.sample_jpegs(3, seed=5, size=64)
    assert len(set(jpegs)) == 3 and all(j[:2] == b"\xff\xd8" for j in jpegs)
    assert tf.io.decode_jpeg(jpegs[0]).shape == (64, 64, 3)


def test_image_classifier_top5(image_fn: Signature) -> None:
    _, inputs = image_fn.structured_input_signature
    assert specs(inputs) == {"image_bytes": (tf.string, [None])}
    # Any input size: the graph resizes to 224x224.
    jpegs = image.sample_jpegs(2, seed=11) + image.sample_jpegs(1, seed=12, size=97)
    out = image_fn(image_bytes=tf.constant(jpegs))
    scores, classes = out["scores"].numpy(), out["classes"].numpy()
    assert scores.shape == classes.shape == (3, 5)
    assert scores.dtype == np.float32 and classes.dtype == np.int32
    assert ((scores >= 0) & (scores <= 1)).all() and (np.diff(scores, axis=1) <= 0).all()
    assert ((classes >= 0) & (classes < 1000)).all()
    assert len({tuple(c) for c in classes}) > 1, "outputs should depend on the image"


def test_image_classifier_batch_independent(image_fn: Signature) -> None:
    jpegs = image.sample_jpegs(4, seed=13)
    four = image_fn(image_bytes=tf.constant(jpegs))
    one = image_fn(image_bytes=tf.constant(jpegs[2:3]))
    np.testing.assert_array_equal(one["classes"].numpy()[0], four["classes"].numpy()[2])
    np.testing.assert_allclose(one["scores"].numpy()[0], four["scores"].numpy()[2], rtol=1e-5)


# --- per-shape models (batch fixtures) ---------------------------------------------------------

@pytest.mark.parametrize("name", list(shapes.MODELS))
def test_shape_models_answer_like_their_numpy_twins(models_dir: Path, name: str) -> None:
    path = models_dir / shapes.FOLDER / name / "1"
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    _, inputs = fn.structured_input_signature
    assert {k: (v.dtype.name, tuple(v.shape.as_list())) for k, v in inputs.items()} == shapes.MODELS[name].inputs
    rows = shapes.sample_inputs(name, 5, seed=3)
    got = {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in rows.items()}).items()}
    for key, want in shapes.MODELS[name].expected(**rows).items():
        if want.dtype == object:
            assert got[key].tolist() == want.tolist()
        else:
            np.testing.assert_allclose(got[key], want, rtol=1e-6)


# --- configs and the build itself -------------------------------------------------------------

def test_models_config_lists_both_models(models_dir: Path) -> None:
    config = text_format.Parse((models_dir / build.CONFIG_FILE).read_text(),
                               model_server_config_pb2.ModelServerConfig())
    entries = {c.name: c for c in config.model_config_list.config}
    assert set(entries) == {"natality", "image_classifier"}
    for name, entry in entries.items():
        assert entry.base_path == str((models_dir / name).resolve())
        assert entry.model_platform == "tensorflow"


def test_batching_config_is_valid() -> None:
    text = (REPO / "serving" / "examples" / "batching.config").read_text()
    fields = dict(re.findall(r"^(\w+) \{ value: (\d+) \}$", text, flags=re.M))
    assert BatchingConfig(**fields) == BatchingConfig(
        max_batch_size=128, batch_timeout_micros=2000,
        max_enqueued_batches=64, num_batch_threads=1)
    assert text.startswith("#")


@pytest.mark.slow
def test_natality_build_is_deterministic_and_idempotent(tmp_path: Path) -> None:
    # In subprocesses: the builder turns on TF op determinism and seeds process-wide. Both at
    # once: each build is mostly one busy core, and there are two.
    stale = tmp_path / "b" / "natality" / "1" / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("left from an older build")
    builds = [subprocess.Popen([sys.executable, "-m", "serving.examples.build", "--out",
                                str(tmp_path / name), "--only", "natality"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
              for name in ("a", "b")]
    for process in builds:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output.decode(errors="replace")[-3000:]
    assert not stale.exists()
    config = (tmp_path / "b" / build.CONFIG_FILE).read_text()
    assert "natality" in config and "image_classifier" not in config

    rows = natality.sample_rows(300, seed=21)
    first, second = (
        predict_natality(tf.saved_model.load(str(tmp_path / n / "natality" / "1"))
                         .signatures["serving_default"], rows)
        for n in ("a", "b"))
    np.testing.assert_array_equal(first, second)
