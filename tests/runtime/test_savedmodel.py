"""Loading and running SavedModels of every kind (serving/runtime/savedmodel.py, warmup.py)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from serving.errors import InvalidArgument
from serving.runtime import savedmodel, warmup
from serving.runtime.signature import CLASSIFY, PREDICT, REGRESS, STRING


def example(x: float) -> bytes:
    feature = tf.train.Feature(float_list=tf.train.FloatList(value=[x]))
    return tf.train.Example(features=tf.train.Features(feature={"x": feature})).SerializeToString()


@pytest.fixture(scope="module")
def half_plus_two(tfserving_dir):
    return savedmodel.load(tfserving_dir / "saved_model_half_plus_two_cpu" / "00000123")


def test_tf1_model_specs_come_from_its_signature_defs(half_plus_two):
    spec = half_plus_two.signature("serving_default")
    assert spec.method_name == PREDICT
    assert spec.inputs["x"].dtype == np.float32 and spec.inputs["x"].shape == (None, 1)
    assert spec.inputs["x"].dtype_name == "DT_FLOAT"
    assert half_plus_two.signature("classify_x_to_y").method_name == CLASSIFY
    assert half_plus_two.signature("classify_x_to_y").inputs["inputs"].shape is None
    assert half_plus_two.signature("regress_x_to_y").method_name == REGRESS


def test_tf1_model_is_fed_like_tf_serving_feeds_it(half_plus_two):
    """TF Serving's own test: [2, 3, 4] into x of declared shape [-1, 1]."""
    out = half_plus_two.run("serving_default", {"x": np.array([2.0, 3.0, 4.0], np.float32)})
    np.testing.assert_allclose(out["y"], [3.0, 3.5, 4.0])


def test_tf1_classify_and_regress_signatures_take_examples(half_plus_two):
    examples = np.array([example(2.0), example(4.0)], dtype=object)
    scores = half_plus_two.run("classify_x_to_y", {"inputs": examples})["scores"]
    np.testing.assert_allclose(scores, [[3.0], [4.0]])
    outputs = half_plus_two.run("regress_x_to_y", {"inputs": examples})["outputs"]
    np.testing.assert_allclose(outputs, [[3.0], [4.0]])


def test_half_plus_three_loads_although_tf2s_loader_cannot(tfserving_dir):
    model = savedmodel.load(tfserving_dir / "saved_model_half_plus_three" / "00000123")
    out = model.run("tensorflow/serving/regress",
                    {"inputs": np.array([example(1.0), example(2.0)], dtype=object)})
    np.testing.assert_allclose(np.ravel(out["outputs"]), [3.5, 4.0])


def test_keras3_export_and_tf2_save_load_and_run(models_dir):
    natality = savedmodel.load(models_dir / "natality" / "1")
    spec = natality.signature("serving_default")
    assert {k: v.dtype for k, v in spec.inputs.items()} == {
        "is_male": STRING, "plurality": STRING, "mother_age": np.float32, "gestation_weeks": np.float32}
    assert "__saved_model_init_op" in natality.signature_defs  # metadata shows it, as TF Serving's
    assert "__saved_model_init_op" not in natality.specs
    inputs = {"is_male": np.array([b"True"], object), "plurality": np.array([b"Single(1)"], object),
              "mother_age": np.array([28.0], np.float32), "gestation_weeks": np.array([39.0], np.float32)}
    assert natality.run("serving_default", inputs)["weight_pounds"].shape == (1,)
    image = savedmodel.load(models_dir / "image_classifier" / "1")
    assert image.signature("serving_default").inputs["image_bytes"].dtype == STRING


def test_execution_errors_are_invalid_argument(half_plus_two, models_dir):
    with pytest.raises(InvalidArgument, match="not found in signature def"):
        half_plus_two.signature("nope")
    natality = savedmodel.load(models_dir / "natality" / "1")
    bad = {"is_male": np.array([b"maybe"], object), "plurality": np.array([b"Single(1)"], object),
           "mother_age": np.array([28.0], np.float32), "gestation_weeks": np.array([39.0], np.float32)}
    with pytest.raises(InvalidArgument):
        natality.run("serving_default", bad)


def test_recorded_warmup_requests_run(models_dir):
    natality = savedmodel.load(models_dir / "natality" / "1")
    assert len(warmup.recorded_requests(natality)) == 4
    assert warmup.run(natality, (1, 64)) == 4


def test_synthetic_warmup_at_each_batch_size(half_plus_two):
    assert warmup.recorded_requests(half_plus_two) is None
    requests = warmup.synthetic_requests(half_plus_two, (1, 8))
    assert [(r.signature_name, r.inputs["x"].shape) for r in requests] == [
        ("serving_default", (1, 1)), ("serving_default", (8, 1))]
    assert warmup.run(half_plus_two, (1, 8)) == 2


def test_a_failing_recorded_warmup_fails_the_load(tfserving_dir, tmp_path):
    copy = tmp_path / "123"
    shutil.copytree(tfserving_dir / "saved_model_half_plus_two_cpu" / "00000123", copy)
    (copy / "assets.extra").mkdir()
    request = predict_pb2.PredictRequest()
    request.inputs["nope"].CopyFrom(tf.make_tensor_proto([1.0]))
    entry = prediction_log_pb2.PredictionLog()
    entry.predict_log.request.CopyFrom(request)
    with tf.io.TFRecordWriter(str(copy / warmup.WARMUP_FILE)) as writer:
        writer.write(entry.SerializeToString())
    model = savedmodel.load(copy)
    with pytest.raises(InvalidArgument, match=r"Signature inputs are \['x'\]; got \['nope'\]"):
        warmup.run(model, (1,))
