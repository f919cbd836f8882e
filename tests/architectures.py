"""Small real models of the architectures users serve, exported as users export them
(Keras 3 ``model.export``, or ``tf.saved_model.save`` of a ``tf.Module``), none with a
recorded warm-up file; and the requests tests send them. Used by tests/test_architectures.py.

Each is tiny (vocabularies of a few words, a few units) so that building all of them takes
seconds; their answers are compared with ``tf.saved_model.load(path).signatures[...]``'s.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Inputs = dict[str, np.ndarray]

WORDS = ["red", "green", "blue", "the", "cat", "sat", "on", "mat", "dog", "ran"]


@dataclass(frozen=True)
class Architecture:
    """How to build one model into a version directory, and the requests to send each of
    its signatures (each request a batch of rows of one shape)."""

    build: Callable[[Path], None]
    requests: dict[str, list[Inputs]]


def _keras() -> Any:
    import keras

    keras.utils.set_random_seed(7)
    return keras


def _set_batchnorm_statistics(keras: Any, model: Any) -> None:
    """Moving statistics other than their initial 0 and 1, as a trained model has (training
    MobileNetV2 even one step costs half a minute of tracing here)."""
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.2, size).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, size).astype(np.float32))


def build_mobilenet(path: Path) -> None:
    keras = _keras()
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10,
                                           classifier_activation=None)  # logits: they move with the input
    _set_batchnorm_statistics(keras, model)
    model.export(str(path), verbose=False)


def build_text(path: Path) -> None:
    keras = _keras()
    vectorize = keras.layers.TextVectorization(max_tokens=16, output_sequence_length=6)
    vectorize.adapt(np.array([" ".join(WORDS[i:i + 4]) for i in range(len(WORDS))]))
    text = keras.Input(shape=(), dtype="string", name="text")
    hidden = keras.layers.Embedding(16, 4)(vectorize(text))
    hidden = keras.layers.GlobalAveragePooling1D()(hidden)
    model = keras.Model(text, keras.layers.Dense(2, name="score")(hidden))
    model.export(str(path), verbose=False)


def build_preprocessing(path: Path) -> None:
    keras = _keras()
    color = keras.Input(shape=(1,), dtype="string", name="color")
    code = keras.Input(shape=(1,), dtype="int64", name="code")
    city = keras.Input(shape=(1,), dtype="string", name="city")
    amount = keras.Input(shape=(1,), dtype="float32", name="amount")
    normalize = keras.layers.Normalization()
    normalize.adapt(np.array([[1.0], [4.0], [9.0], [16.0]], np.float32))
    features = keras.layers.Concatenate()([
        keras.layers.StringLookup(vocabulary=["red", "green", "blue"], output_mode="one_hot")(color),
        keras.layers.IntegerLookup(vocabulary=[3, 5, 7], output_mode="one_hot")(code),
        keras.layers.Hashing(num_bins=4, output_mode="one_hot")(city),
        normalize(amount),
    ])
    model = keras.Model([color, code, city, amount], keras.layers.Dense(3, name="out")(features))
    model.export(str(path), verbose=False)


def build_batchnorm(path: Path) -> None:
    keras = _keras()
    x = keras.Input(shape=(8,), name="x")
    hidden = keras.layers.Dense(6)(x)
    hidden = keras.layers.BatchNormalization()(hidden)
    hidden = keras.layers.Dropout(0.5)(keras.layers.Activation("relu")(hidden))
    model = keras.Model(x, keras.layers.Dense(2)(hidden))
    _set_batchnorm_statistics(keras, model)
    model.export(str(path), verbose=False)


def build_lstm(path: Path) -> None:
    keras = _keras()
    steps = keras.Input(shape=(5, 3), name="steps")
    model = keras.Model(steps, keras.layers.Dense(1)(keras.layers.LSTM(4)(steps)))
    model.export(str(path), verbose=False)


def build_tokens(path: Path) -> None:
    keras = _keras()
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    hidden = keras.layers.Embedding(20, 4, mask_zero=True)(tokens)
    hidden = keras.layers.GRU(3)(hidden)
    model = keras.Model(tokens, keras.layers.Dense(2)(hidden))
    model.export(str(path), verbose=False)


def build_lookup_module(path: Path) -> None:
    import tensorflow as tf

    class Lookup(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            keys = tf.constant(WORDS)
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(keys, tf.range(len(WORDS), dtype=tf.int64)), default_value=-1)
            self.weights = tf.Variable(np.linspace(0.5, 2.0, len(WORDS)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="word")])
        def ids(self, word):
            found = self.table.lookup(word)
            return {"id": found, "known": tf.strings.join([word, tf.where(found >= 0, "+", "-")])}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="word"),
                                      tf.TensorSpec([None], tf.float32, name="count")])
        def score(self, word, count):
            found = self.table.lookup(word)
            weight = tf.where(found >= 0, tf.gather(self.weights, tf.maximum(found, 0)), 0.0)
            return {"score": weight * count}

    module = Lookup()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.ids, "score": module.score})


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _words(rows: int, seed: int) -> np.ndarray:
    picks = _rng(seed).integers(0, len(WORDS) + 2, rows)
    return np.array([(WORDS + ["unknown", "zebra"])[i].encode() for i in picks], dtype=object)


def _sentences(rows: int, seed: int) -> np.ndarray:
    rng = _rng(seed)
    return np.array([" ".join(rng.choice(WORDS + ["never", "seen"], rng.integers(1, 9))).encode()
                     for _ in range(rows)], dtype=object)


def _preprocessing(rows: int, seed: int) -> Inputs:
    rng = _rng(seed)
    return {"color": np.array([[c.encode()] for c in rng.choice(["red", "green", "blue", "pink"], rows)], object),
            "code": rng.choice([3, 5, 7, 9], (rows, 1)).astype(np.int64),
            "city": np.array([[c.encode()] for c in rng.choice(["oslo", "lima", "rome"], rows)], object),
            "amount": rng.uniform(0, 20, (rows, 1)).astype(np.float32)}


def _tokens(rows: int, length: int, seed: int) -> Inputs:
    tokens = _rng(seed).integers(1, 20, (rows, length)).astype(np.int32)
    tokens[0, length // 2:] = 0  # a padded row: the mask matters
    return {"tokens": tokens}


ARCHITECTURES: dict[str, Architecture] = {
    "mobilenet_v2": Architecture(build_mobilenet, {"serving_default": [
        {"keras_tensor": _rng(s).uniform(-1, 1, (n, 32, 32, 3)).astype(np.float32)} for n, s in ((1, 1), (3, 2))]}),
    "text_embedding": Architecture(build_text, {"serving_default": [
        {"text": _sentences(n, s)} for n, s in ((1, 3), (4, 4))]}),
    "preprocessing": Architecture(build_preprocessing, {"serving_default": [
        _preprocessing(n, s) for n, s in ((1, 5), (5, 6))]}),
    "batchnorm_dropout": Architecture(build_batchnorm, {"serving_default": [
        {"x": _rng(s).normal(3, 2, (n, 8)).astype(np.float32)} for n, s in ((1, 7), (6, 8))]}),
    "lstm": Architecture(build_lstm, {"serving_default": [
        {"steps": _rng(s).normal(0, 1, (n, 5, 3)).astype(np.float32)} for n, s in ((1, 9), (4, 10))]}),
    "variable_length_tokens": Architecture(build_tokens, {"serving_default": [
        _tokens(n, length, s) for n, length, s in ((2, 3, 11), (3, 7, 12), (2, 12, 13))]}),
    "lookup_module": Architecture(build_lookup_module, {
        "serving_default": [{"word": _words(n, s)} for n, s in ((1, 14), (6, 15))],
        "score": [{"word": _words(n, s), "count": _rng(s).uniform(0, 3, n).astype(np.float32)}
                  for n, s in ((2, 16), (5, 17))]}),
}
