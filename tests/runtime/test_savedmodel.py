"""Loading and running SavedModels of every kind (serving/runtime/savedmodel.py, warmup.py)."""
from __future__ import annotations

import gc
import shutil
import weakref

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


@pytest.mark.slow
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
    assert functions.in_session is moved.in_session is False
    loaded = weakref.ref(moved._keepalive)
    assert warmup.run(moved, (1, 8)) == 4
    assert moved.in_session is True
    gc.collect()
    assert loaded() is None  # the model is not held twice
    for rows in (1, 7, 300):
        inputs = natality_rows(rows)
        want = functions.run("serving_default", inputs)["weight_pounds"]
        np.testing.assert_allclose(moved.run("serving_default", inputs)["weight_pounds"], want, rtol=1e-6)
    bad = dict(natality_rows(1), is_male=np.array([b"maybe"], object))
    with pytest.raises(InvalidArgument):
        moved.run("serving_default", bad)


@pytest.mark.slow
def test_a_tf2_model_the_session_cannot_run_stays_on_its_functions(models_dir):
    """TF1's loader restores only part of the Keras 3 image classifier's variables."""
    image = savedmodel.load(models_dir / "image_classifier" / "1")
    requests = warmup.recorded_requests(image)
    assert warmup.run(image, (1,)) == len(requests)
    assert image.in_session is False
    assert image.run("serving_default", requests[0].inputs)["scores"].shape[0] == len(requests[0].inputs["image_bytes"])


@pytest.fixture
def sessions(candidates):
    """(the Sessions prefer_session builds, each with a ``closed`` flag; ``faults``: a
    signature name -> a change made to its Session runner's answers, or a raise)."""
    return candidates.built, candidates.faults


def test_a_session_that_answers_differently_is_not_used(models_dir, sessions):
    built, faults = sessions
    faults["serving_default"] = lambda run: lambda inputs: {k: v + 1 for k, v in run(inputs).items()}
    model = savedmodel.load(models_dir / "natality" / "1")
    warmup.run(model, (1,))
    assert model.in_session is False and len(built) == 1 and built[0].closed
    np.testing.assert_array_equal(model.run("serving_default", natality_rows(5))["weight_pounds"],
                                  savedmodel.load(models_dir / "natality" / "1")
                                  .run("serving_default", natality_rows(5))["weight_pounds"])


def test_every_signature_moves_or_none(tmp_path, sessions, two_signatures):
    built, faults = sessions
    model = two_signatures(tmp_path)
    model.prefer_session(warmup.synthetic_requests(model, (3,))[:1])  # only "dot" answered: "scale" unproven
    assert model.in_session is False and built[-1].closed
    faults["scale"] = lambda run: lambda inputs: {"y": run(inputs)["y"] * 2}
    model.prefer_session(warmup.synthetic_requests(model, (3,)))
    assert model.in_session is False and built[-1].closed
    faults.clear()
    model.prefer_session(warmup.synthetic_requests(model, (3,)))
    assert model.in_session is True and not built[-1].closed
    x = np.array([[1.0, 1.0], [0.5, 2.0]], np.float32)
    np.testing.assert_allclose(model.run("dot", {"x": x})["y"], [5.0, 7.0])
    np.testing.assert_allclose(model.run("scale", {"x": x})["y"], [[2.0, 3.0], [1.0, 6.0]])


def test_a_request_only_one_runner_refuses_is_a_difference(tmp_path, sessions, two_signatures):
    _, faults = sessions
    model = two_signatures(tmp_path)
    requests = warmup.synthetic_requests(model, (2,))
    faults["dot"] = lambda run: lambda inputs: {"y": np.zeros(len(inputs["x"]), np.float32)} if inputs["x"].size == 0 \
        else run(inputs)
    refused_by_the_function = ("dot", {"x": np.zeros((0, 3), np.float32)})  # wrong width: the function refuses
    model.prefer_session([refused_by_the_function, *requests])
    assert model.in_session is False


def test_requests_both_refuse_prove_nothing(models_dir, sessions):
    built, _ = sessions
    model = savedmodel.load(models_dir / "shapes" / "vec16" / "1")
    model.prefer_session([])
    model.prefer_session([("serving_default", {"nope": np.zeros((1, 16), np.float32)}),
                          ("no_such_signature", {})])
    assert model.in_session is False and len(built) == 2 and all(s.closed for s in built)
    model.prefer_session(warmup.synthetic_requests(model, (2,)))
    assert model.in_session is True


def test_a_loader_failure_leaves_the_functions(models_dir, monkeypatch):
    def refuse(path, defs, direct_call=True, config=None):
        raise RuntimeError("no")

    monkeypatch.setattr(savedmodel, "_session_runners", refuse)
    model = savedmodel.load(models_dir / "natality" / "1")
    assert warmup.run(model, (1,)) == 4
    assert model.in_session is False


def test_synthetic_floats_are_not_zeros(models_dir):
    """Zeros would not reach the weights they multiply, so a Session with wrong ones would pass."""
    model = savedmodel.load(models_dir / "shapes" / "vec16" / "1")
    (request,) = warmup.synthetic_requests(model, (4,))
    for value in request.inputs.values():
        assert value.dtype == np.float32 and (value >= 0.5).all() and len(np.unique(value)) > 1


def test_tf2_session_false_keeps_the_functions(models_dir):
    path = str(models_dir / "shapes" / "vec16" / "1")
    assert LocalSource((1,), tf2_session=False).load("vec16", 1, path).in_session is False
    assert LocalSource((1,)).load("vec16", 1, path).in_session is True


def test_a_tf1_model_is_in_a_session_from_the_start(half_plus_two):
    assert half_plus_two.in_session is True
