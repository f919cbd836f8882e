"""How a TF1 Session is called (``--tf_session_direct_call``): through TensorFlow's internal
C entry by default, as TF Serving's ``Session::Run``, or through the public ``Session.run``.
The first test fails when TensorFlow moves the internals we use (TensorFlow is pinned to the
minor CI tests: run this file before lifting the pin)."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import tensorflow as tf

from serving.errors import InvalidArgument
from serving.runtime import savedmodel
from serving.settings import Settings


def test_the_tensorflow_internals_of_the_direct_call_are_as_tested():
    assert tf.__version__.split(".")[:2] == ["2", "21"]
    run = tf.compat.v1.Session._call_tf_sessionrun
    assert list(inspect.signature(run).parameters) == [
        "self", "options", "feed_dict", "fetch_list", "target_list", "run_metadata"]
    graph = tf.Graph()
    with graph.as_default():
        placeholder = tf.compat.v1.placeholder(tf.float32, [None, 1], name="x")
        doubled = placeholder * 2
    with tf.compat.v1.Session(graph=graph) as session:
        values = session._call_tf_sessionrun(None, {placeholder._as_tf_output(): np.ones((2, 1), np.float32)},
                                             [doubled._as_tf_output()], [], None)
    assert values[0].tolist() == [[2.0], [2.0]]


@pytest.mark.parametrize("direct", [True, False])
def test_both_calls_answer_alike(tfserving_dir, models_dir, direct):
    half_plus_two = savedmodel.load(tfserving_dir / "saved_model_half_plus_two_cpu" / "00000123", direct_call=direct)
    assert half_plus_two.in_session
    answer = half_plus_two.run("serving_default", {"x": np.array([[2.0], [3.0]], np.float32)})
    assert answer["y"].tolist() == [[3.0], [3.5]]
    vec16 = savedmodel.load(models_dir / "shapes" / "vec16" / "1", direct_call=direct)
    x = np.arange(32, dtype=np.float32).reshape(2, 16)
    vec16.prefer_session([("serving_default", {"x": x})])
    assert vec16.in_session and vec16.direct_call is direct
    assert vec16.run("serving_default", {"x": x})["total"].tolist() == x.sum(axis=1).tolist()


def test_only_the_direct_call_feeds_as_tf_serving_does(tfserving_dir):
    """TF Serving's own tests feed half_plus_two [3] for its declared [-1, 1]: the direct call
    does too; the public Session.run refuses it (the fallback's one difference)."""
    path = tfserving_dir / "saved_model_half_plus_two_cpu" / "00000123"
    flat = {"x": np.array([2.0, 3.0, 4.0], np.float32)}
    assert savedmodel.load(path).run("serving_default", flat)["y"].tolist() == [3.0, 3.5, 4.0]
    with pytest.raises(InvalidArgument, match="shape"):
        savedmodel.load(path, direct_call=False).run("serving_default", flat)


def test_the_setting_reaches_the_models(tfserving_dir):
    from serving.core.service import _source
    from serving.core.sources import LocalSource

    path = str(tfserving_dir / "saved_model_half_plus_two_cpu" / "00000123")
    source = _source(Settings(port=0, tf_session_direct_call=False), (1,), lambda: None)
    assert isinstance(source, LocalSource)
    assert source.load("default", 123, path).direct_call is False
