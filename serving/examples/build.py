"""Build the example models, the model config that lists them, and TF Serving's test models.

    python -m serving.examples.build --out models [--only natality tfserving ...]

Each model goes to ``<out>/<name>/1/`` with TF Serving's warm-up file
``assets.extra/tf_serving_warmup_requests`` (PredictionLogs of 1 and 8 sample rows, run at
load time so the first real request does not pay for tracing). A version is built in a
hidden sibling folder and moved into place only once it has been verified, so a failed
build leaves the previous version intact and a server watching ``<out>`` never sees half a
SavedModel (TF Serving ignores folders whose names are not numbers). ``<out>/models.config``
lists every example model present under ``<out>``, so rebuilding one with ``--only`` keeps
the others listed.

``<out>/shapes/`` receives tiny models, one per tensor shape (``serving.examples.shapes``),
for the batch pipeline's benchmark and tests; not listed in ``models.config`` either.

``<out>/tfserving/`` receives our builds of TF Serving's own test models
(``serving.examples.tfserving``), under the folder names of TF Serving's testdata: the
suite checks the gateway against TF Serving's answers on them. They are test fixtures, not
examples to serve, so ``models.config`` does not list them.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.examples import image, natality, shapes, tfserving

log = logging.getLogger(__name__)

VERSION = 1
CONFIG_FILE = "models.config"
TFSERVING = "tfserving"
"""The folder under ``<out>`` (and the ``--only`` name) of TF Serving's test models."""
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
WARMUP_BATCH_SIZES = (1, 8, 1, 8)
SAMPLE_JPEG = "sample.jpg"
"""A JPEG beside the models, for trying the image classifier (``<out>/sample.jpg``)."""


@dataclass(frozen=True)
class ExampleModel:
    """How to build one example model and make sample inputs for its ``serving_default``."""

    build: Callable[[Path], object]
    """Builds and verifies one version in the (new) folder it is given."""
    sample_inputs: Callable[[int, int], dict[str, np.ndarray]]
    """(rows, seed) -> inputs by name; strings as object arrays."""


MODELS: dict[str, ExampleModel] = {
    natality.MODEL_NAME: ExampleModel(natality.build, natality.sample_rows),
    image.MODEL_NAME: ExampleModel(image.build, image.sample_inputs),
}
TARGETS: tuple[str, ...] = (*MODELS, TFSERVING, shapes.FOLDER)
"""What ``--only`` can name; all are built by default."""


def write_warmup(version_dir: Path, name: str) -> Path:
    """Write TF Serving's warm-up file: PredictRequests of WARMUP_BATCH_SIZES sample rows."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = version_dir / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for seed, size in enumerate(WARMUP_BATCH_SIZES):
            request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
                name=name, signature_name="serving_default"))
            for key, values in MODELS[name].sample_inputs(size, seed).items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(values))
            record = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(record.SerializeToString(deterministic=True))  # same bytes each build
    return path


def install(final: Path, write: Callable[[Path], object]) -> Path:
    """Run ``write`` on a hidden sibling of ``final``, then move it into place.

    ``write`` gets a folder that does not exist yet; if it fails, ``final`` is untouched.
    """
    staging = final.parent / f".{final.name}.building"
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        write(staging)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def build_model(out: Path, name: str) -> Path:
    """Build ``name`` into ``<out>/<name>/<VERSION>``, replacing any previous build."""
    def write(staging: Path) -> None:
        MODELS[name].build(staging)
        write_warmup(staging, name)

    return install(out / name / str(VERSION), write)


def build_tfserving(out: Path) -> Path:
    """Build TF Serving's test models into ``<out>/tfserving/<model>/<version>``."""
    base = out / TFSERVING
    for model, versions in tfserving.MODELS.items():
        for version, write in versions.items():
            install(base / model / version, write)
    return base


def build_shapes(out: Path) -> Path:
    """Build the tiny per-shape models (``serving.examples.shapes``) into ``<out>/shapes/<name>/1``."""
    base = out / shapes.FOLDER
    for name in shapes.MODELS:
        install(base / name / str(VERSION), shapes.builder(name))
    return base


def write_model_config(out: Path) -> Path:
    """Write TF Serving's ``model_config_list`` text proto for the models built under ``out``."""
    entries = [
        "  config {\n"
        f"    name: \"{name}\"\n"
        f"    base_path: \"{(out / name).resolve()}\"\n"
        "    model_platform: \"tensorflow\"\n"
        "  }\n"
        for name in MODELS
        if (out / name / str(VERSION) / "saved_model.pb").is_file()
    ]
    path = out / CONFIG_FILE
    path.write_text("model_config_list {\n" + "".join(entries) + "}\n")
    return path


def build(out: Path, only: Sequence[str] | None = None) -> Path:
    """Build the named TARGETS (all by default) and rewrite the config; return its path."""
    names = list(only) if only else list(TARGETS)
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {sorted(TARGETS)}")
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        started = time.perf_counter()
        if name == TFSERVING:
            log.info("building TF Serving's test models into %s", out / TFSERVING)
            build_tfserving(out)
        elif name == shapes.FOLDER:
            log.info("building the per-shape models into %s", out / shapes.FOLDER)
            build_shapes(out)
        else:
            log.info("building %s into %s", name, out / name / str(VERSION))
            build_model(out, name)
            if name == image.MODEL_NAME:  # the README's image request sends it
                (out / SAMPLE_JPEG).write_bytes(image.sample_jpegs(1, seed=0)[0])
        log.info("built %s in %.1f s", name, time.perf_counter() - started)
    config = write_model_config(out)
    log.info("wrote %s", config)
    return config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models"), help="output folder")
    parser.add_argument("--only", nargs="+", choices=sorted(TARGETS), metavar="NAME",
                        help=f"build only these models ({', '.join(TARGETS)})")
    args = parser.parse_args(argv)
    # Before TensorFlow is first imported (in the builders), or it logs at INFO level.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # "Assets written to ..."
    started = time.perf_counter()
    build(args.out, args.only)
    log.info("done in %.1f s", time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
