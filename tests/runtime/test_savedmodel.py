"""Loading and running SavedModels of every kind (serving/runtime/savedmodel.py, warmup.py)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from serving.core.sources import LocalSource
from serving.errors import InvalidArgument
from serving.examples.natality import PLURALITY_VALUES
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


def natality_rows(rows: int) -> dict[str, np.ndarray]:
    pick = np.arange(rows)
    plurality = [value.encode() for value in PLURALITY_VALUES]
    return {"is_male": np.array([b"True", b"False"], object)[pick % 2],
            "plurality": np.array(plurality, object)[pick % len(plurality)],
            "mother_age": (18 + pick % 25).astype(np.float32),
            "gestation_weeks": (30 + pick % 12).astype(np.float32)}


def test_a_tf2_model_moves_to_a_session_where_its_warmup_answers_alike(models_dir):
    functions = savedmodel.load(models_dir / "natality" / "1")
    moved = savedmodel.load(models_dir / "natality" / "1")
    assert functions.in_session == moved.in_session == frozenset()
    assert warmup.run(moved, (1, 8)) == 4
    assert moved.in_session == {"serving_default"}
    assert isinstance(moved._keepalive, tf.compat.v1.Session)  # the functions are gone
    for rows in (1, 7, 300):
        inputs = natality_rows(rows)
        want = functions.run("serving_default", inputs)["weight_pounds"]
        np.testing.assert_allclose(moved.run("serving_default", inputs)["weight_pounds"], want, rtol=1e-6)
    bad = dict(natality_rows(1), is_male=np.array([b"maybe"], object))
    with pytest.raises(InvalidArgument):
        moved.run("serving_default", bad)


def test_a_tf2_model_the_session_cannot_run_stays_on_its_functions(models_dir):
    """TF1's loader restores only part of the Keras 3 image classifier's variables."""
    image = savedmodel.load(models_dir / "image_classifier" / "1")
    requests = warmup.recorded_requests(image)
    assert warmup.run(image, (1,)) == len(requests)
    assert image.in_session == frozenset()
    assert image.run("serving_default", requests[0].inputs)["scores"].shape[0] == len(requests[0].inputs["image_bytes"])


def test_a_session_that_answers_differently_is_not_used(models_dir, monkeypatch):
    real = savedmodel._session_runners

    def off_by_one(path, defs):
        session, runners = real(path, defs)
        return session, {name: lambda inputs, run=run: {k: v + 1 for k, v in run(inputs).items()}
                         for name, run in runners.items()}

    monkeypatch.setattr(savedmodel, "_session_runners", off_by_one)
    model = savedmodel.load(models_dir / "natality" / "1")
    warmup.run(model, (1,))
    assert model.in_session == frozenset()
    np.testing.assert_array_equal(model.run("serving_default", natality_rows(5))["weight_pounds"],
                                  savedmodel.load(models_dir / "natality" / "1")
                                  .run("serving_default", natality_rows(5))["weight_pounds"])


def test_requests_the_functions_refuse_prove_nothing(models_dir):
    model = savedmodel.load(models_dir / "shapes" / "vec16" / "1")
    model.prefer_session([])
    model.prefer_session([("serving_default", {"nope": np.zeros((1, 16), np.float32)}),
                          ("no_such_signature", {})])
    assert model.in_session == frozenset()
    spec = model.signature("serving_default")
    model.prefer_session([("serving_default", {name: np.zeros((2, 16), np.float32) for name in spec.inputs})])
    assert model.in_session == {"serving_default"}


def test_tf2_session_false_keeps_the_functions(models_dir):
    path = str(models_dir / "shapes" / "vec16" / "1")
    assert LocalSource((1,), tf2_session=False).load("vec16", 1, path).in_session == frozenset()
    assert LocalSource((1,)).load("vec16", 1, path).in_session == {"serving_default"}


def test_a_tf1_model_is_in_a_session_from_the_start(half_plus_two):
    assert half_plus_two.in_session == set(half_plus_two.specs)
