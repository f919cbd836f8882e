"""An expensive image classifier: the compute-bound case for benchmarks.

MobileNetV2 (about 300 million multiply-adds per image) with seeded random weights:
nothing is downloaded, the outputs are meaningless but deterministic, and the cost per row
is real. JPEG decoding and resizing run in the graph, so clients send raw JPEG bytes as TF
Serving users do. Saved with plain ``tf.saved_model.save`` of a ``tf.Module`` (not Keras
export), the other common way SavedModels are made. TensorFlow is imported inside ``build``
only.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MODEL_NAME = "image_classifier"
SIGNATURE = "serving_default"
INPUT = "image_bytes"
SIZE = 224
TOP_K = 5
NUM_CLASSES = 1000

_SEED = 20240602


def sample_jpegs(n: int, seed: int, size: int = SIZE) -> list[bytes]:
    """``n`` deterministic synthetic JPEGs (colour gradients plus noise), ``size`` square.

    Smooth images compress like photographs (a few KB each), unlike pure noise.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    out: list[bytes] = []
    for _ in range(n):
        corner = rng.uniform(0, 255, 3)
        across, down = rng.uniform(-128, 128, (2, 3))
        pixels = (corner + ramp[None, :, None] * across + ramp[:, None, None] * down
                  + rng.normal(0, 12, (size, size, 3)))
        buf = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(
            buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def sample_inputs(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` sample JPEGs as the signature's input: an object array of ``bytes``."""
    return {INPUT: np.array(sample_jpegs(n, seed), dtype=object)}


def _calibrate_batch_norm(keras: Any, model: Any, seed: int) -> None:
    """Set every BatchNorm's moving statistics from one batch of sample images.

    Fresh moving statistics (mean 0, variance 1) let activations fade through the network:
    every image then gets the same uniform scores and classes 0..4, which would make the
    model's outputs untestable. With momentum 0, one training-mode pass copies each layer's
    batch statistics, so activations keep their scale and outputs depend on the image.
    """
    norms = [layer for layer in model.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    images = np.stack([np.asarray(_decode(jpeg), np.float32)
                       for jpeg in sample_jpegs(16, seed)]) / 127.5 - 1.0
    model(images, training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum


def _decode(jpeg: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def _make_module(keras: Any, tf: Any, seed: int) -> Any:
    """A tf.Module whose one signature decodes, resizes, classifies and keeps the top 5."""
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(SIZE, SIZE, 3), classes=NUM_CLASSES)
    _calibrate_batch_norm(keras, model, seed)

    class Classifier(tf.Module):
        def __init__(self) -> None:
            super().__init__(name=MODEL_NAME)
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT)])
        def serve(self, image_bytes: Any) -> dict:
            def decode(data: Any) -> Any:
                image = tf.io.decode_jpeg(data, channels=3)
                return tf.image.resize(image, [SIZE, SIZE])

            images = tf.map_fn(decode, image_bytes,
                               fn_output_signature=tf.TensorSpec([SIZE, SIZE, 3], tf.float32))
            images = images / 127.5 - 1.0  # MobileNetV2's preprocess_input
            probabilities = self.model(images, training=False)
            top = tf.math.top_k(probabilities, k=TOP_K)
            return {"scores": top.values, "classes": tf.cast(top.indices, tf.int32)}

    return Classifier()


def build(export_dir: Path, seed: int = _SEED) -> None:
    """Make the seeded model, save it to ``export_dir`` (a version dir) and check its signature."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    module = _make_module(keras, tf, seed)
    tf.saved_model.save(module, str(export_dir), signatures={SIGNATURE: module.serve})

    fn = tf.saved_model.load(str(export_dir)).signatures[SIGNATURE]
    _, inputs = fn.structured_input_signature
    got = ({k: (v.dtype, v.shape.as_list()) for k, v in inputs.items()},
           {k: (v.dtype, v.shape.as_list()) for k, v in fn.structured_outputs.items()})
    want = ({INPUT: (tf.string, [None])},
            {"scores": (tf.float32, [None, TOP_K]), "classes": (tf.int32, [None, TOP_K])})
    if got != want:
        raise RuntimeError(f"image_classifier signature mismatch: {got}")
    out = fn(**{INPUT: tf.constant(sample_jpegs(2, seed))})
    if not np.isfinite(out["scores"].numpy()).all():
        raise RuntimeError("image_classifier gives non-finite scores")
