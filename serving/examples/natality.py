"""The baby-weight regressor of Google's "Comparing machine learning models for predictions
in Cloud Dataflow pipelines" solution, trained on a KNOWN formula.

The original was trained on BigQuery's natality data; we cannot download that, and a model
whose right answer is known lets tests check predictions end to end. ``expected_weight`` is
that answer, in numpy only: tests, benchmarks and pipelines import this module without
paying for TensorFlow, which is imported inside ``build`` alone.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

Signature = Callable[..., dict[str, Any]]
"""A loaded SavedModel signature (a ConcreteFunction); TF types stay out of this module."""

MODEL_NAME = "natality"
SIGNATURE = "serving_default"
OUTPUT = "weight_pounds"

IS_MALE_VALUES: tuple[str, ...] = ("True", "False")
PLURALITY_VALUES: tuple[str, ...] = (
    "Single(1)", "Twins(2)", "Triplets(3)", "Quadruplets(4)", "Quintuplets(5)", "Multiple(2+)",
)
MOTHER_AGE_RANGE: tuple[float, float] = (12.0, 50.0)
GESTATION_WEEKS_RANGE: tuple[float, float] = (17.0, 47.0)
INPUTS: tuple[str, ...] = ("is_male", "mother_age", "plurality", "gestation_weeks")
"""Input names of the serving signature, in the order its function takes them."""

# The formula: a girl, single birth, 39 weeks, mother aged 28 weighs BASE_POUNDS; each term
# is additive. Its smallest value over the valid ranges is 0.56 lb (17 weeks, mother 12,
# quintuplets), its largest 9.28 lb, so it stays positive everywhere.
BASE_POUNDS = 7.5
POUNDS_PER_GESTATION_WEEK = 0.15
POUNDS_PER_MOTHER_YEAR = 0.015
MALE_POUNDS = 0.25
PLURALITY_POUNDS: dict[str, float] = {
    "Single(1)": 0.0, "Twins(2)": -1.4, "Triplets(3)": -2.4,
    "Quadruplets(4)": -3.0, "Quintuplets(5)": -3.4, "Multiple(2+)": -1.6,
}

TOLERANCE_POUNDS = 0.15
"""Largest |prediction - expected_weight| allowed for any valid row (build check and tests)."""
MAX_MEAN_ABS_ERROR = 0.05
"""The build fails if the exported model's mean absolute error on held-out rows exceeds this."""

_SEED = 20240601
_TRAIN_ROWS = 16_384
_CHECK_ROWS = 4_096
_EPOCHS = 24


def _as_str(values: np.ndarray | list) -> np.ndarray:
    """Strings arrive as str, numpy unicode or bytes (TF returns bytes); compare as str."""
    arr = np.asarray(values)
    if arr.dtype.kind == "S":
        return np.char.decode(arr, "utf-8")
    if arr.dtype.kind == "O":
        return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in arr.ravel()],
                        dtype=str).reshape(arr.shape)
    return arr.astype(str)


def expected_weight(is_male, mother_age, plurality, gestation_weeks) -> np.ndarray:
    """The known truth the model is trained on: baby weight in pounds (float32), vectorised.

    Raises ValueError for a string outside IS_MALE_VALUES or PLURALITY_VALUES.
    """
    male = _as_str(is_male)
    plural = _as_str(plurality)
    for name, values, vocab in (("is_male", male, IS_MALE_VALUES),
                                ("plurality", plural, PLURALITY_VALUES)):
        bad = ~np.isin(values, vocab)
        if bad.any():
            raise ValueError(f"{name} must be one of {vocab}, got {values[bad][0]!r}")
    effects = np.array([PLURALITY_POUNDS[p] for p in PLURALITY_VALUES], dtype=np.float64)
    plural_idx = np.argmax(plural[..., None] == np.array(PLURALITY_VALUES), axis=-1)
    weight = (
        BASE_POUNDS
        + POUNDS_PER_GESTATION_WEEK * (np.asarray(gestation_weeks, np.float64) - 39.0)
        + POUNDS_PER_MOTHER_YEAR * (np.asarray(mother_age, np.float64) - 28.0)
        + MALE_POUNDS * (male == "True")
        + effects[plural_idx]
    )
    return weight.astype(np.float32)


def sample_rows(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` random valid rows, columnar, keyed by input name.

    Strings are object arrays of ``str`` (JSON-friendly; TF accepts them); numbers are
    float32 drawn uniformly over the valid ranges. Categories are uniform so every one is
    exercised, unlike real births.
    """
    rng = np.random.default_rng(seed)
    return {
        "is_male": rng.choice(np.array(IS_MALE_VALUES, dtype=object), size=n),
        "mother_age": rng.uniform(*MOTHER_AGE_RANGE, size=n).astype(np.float32),
        "plurality": rng.choice(np.array(PLURALITY_VALUES, dtype=object), size=n),
        "gestation_weeks": rng.uniform(*GESTATION_WEEKS_RANGE, size=n).astype(np.float32),
    }


def _uniform_moments(lo: float, hi: float) -> tuple[float, float]:
    return (lo + hi) / 2, (hi - lo) ** 2 / 12


def _make_model(keras: Any) -> Any:
    """One-hot strings + normalised numbers -> a wide linear path plus a 64->32 MLP."""
    layers = keras.layers
    inputs = {
        "is_male": keras.Input(shape=(), dtype="string", name="is_male"),
        "mother_age": keras.Input(shape=(), dtype="float32", name="mother_age"),
        "plurality": keras.Input(shape=(), dtype="string", name="plurality"),
        "gestation_weeks": keras.Input(shape=(), dtype="float32", name="gestation_weeks"),
    }
    # num_oov_indices=0: an unknown category is an error, not a silent guess.
    sex = layers.StringLookup(vocabulary=list(IS_MALE_VALUES), num_oov_indices=0,
                              output_mode="one_hot")(inputs["is_male"])
    plural = layers.StringLookup(vocabulary=list(PLURALITY_VALUES), num_oov_indices=0,
                                 output_mode="one_hot")(inputs["plurality"])
    numeric = []
    for name, bounds in (("mother_age", MOTHER_AGE_RANGE),
                         ("gestation_weeks", GESTATION_WEEKS_RANGE)):
        mean, var = _uniform_moments(*bounds)
        column = layers.Reshape((1,))(inputs[name])
        numeric.append(layers.Normalization(mean=mean, variance=var)(column))
    features = layers.Concatenate()([sex, plural, *numeric])
    wide = layers.Dense(1, name="wide")(features)
    deep = layers.Dense(64, activation="relu")(features)
    deep = layers.Dense(32, activation="relu")(deep)
    deep = layers.Dense(1, name="deep")(deep)
    out = layers.Reshape((), name=OUTPUT)(layers.Add()([wide, deep]))
    return keras.Model(inputs, out, name=MODEL_NAME)


def _check_signature(fn: Signature) -> None:
    """Fail loudly unless the exported signature is exactly the documented one."""
    import tensorflow as tf

    _, inputs = fn.structured_input_signature
    got_in = {k: (v.dtype, v.shape.as_list()) for k, v in inputs.items()}
    want_in = {"is_male": (tf.string, [None]), "mother_age": (tf.float32, [None]),
               "plurality": (tf.string, [None]), "gestation_weeks": (tf.float32, [None])}
    got_out = {k: (v.dtype, v.shape.as_list()) for k, v in fn.structured_outputs.items()}
    want_out = {OUTPUT: (tf.float32, [None])}
    if got_in != want_in or got_out != want_out:
        raise RuntimeError(f"natality signature mismatch: inputs {got_in}, outputs {got_out}")


def _predict(fn: Signature, rows: dict[str, np.ndarray]) -> np.ndarray:
    import tensorflow as tf

    return fn(**{k: tf.constant(v) for k, v in rows.items()})[OUTPUT].numpy()


def build(export_dir: Path, seed: int = _SEED) -> dict[str, float]:
    """Train, export to ``export_dir`` (a version dir), verify; return the fit measured.

    Deterministic: the same seed gives the same weights (op determinism on, fixed seeds).
    Raises RuntimeError if the exported model misses the formula or its signature drifts.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()

    train = sample_rows(_TRAIN_ROWS, seed)
    target = expected_weight(**train)
    model = _make_model(keras)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.01, decay_steps=_EPOCHS * _TRAIN_ROWS // 128, alpha=0.01)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="mse")
    model.fit(train, target, batch_size=128, epochs=_EPOCHS, shuffle=True, verbose=0)

    def serve(is_male: Any, mother_age: Any, plurality: Any, gestation_weeks: Any) -> dict:
        rows = {"is_male": is_male, "mother_age": mother_age, "plurality": plurality,
                "gestation_weeks": gestation_weeks}
        return {OUTPUT: model(rows, training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE, fn=serve,
        input_signature=[tf.TensorSpec([None], tf.string, name="is_male"),
                         tf.TensorSpec([None], tf.float32, name="mother_age"),
                         tf.TensorSpec([None], tf.string, name="plurality"),
                         tf.TensorSpec([None], tf.float32, name="gestation_weeks")])
    archive.write_out(str(export_dir), verbose=False)

    fn = tf.saved_model.load(str(export_dir)).signatures[SIGNATURE]
    _check_signature(fn)
    held_out = sample_rows(_CHECK_ROWS, seed + 1)
    error = np.abs(_predict(fn, held_out) - expected_weight(**held_out))
    fit = {"mean_abs_error": float(error.mean()), "max_abs_error": float(error.max())}
    if fit["mean_abs_error"] > MAX_MEAN_ABS_ERROR or fit["max_abs_error"] > TOLERANCE_POUNDS:
        raise RuntimeError(
            f"natality model misses the formula: {fit} (limits: mean "
            f"{MAX_MEAN_ABS_ERROR}, max {TOLERANCE_POUNDS} lb)")
    log.info("natality fit on %d held-out rows: mean abs error %.4f lb, max %.4f lb",
             _CHECK_ROWS, fit["mean_abs_error"], fit["max_abs_error"])
    return fit
