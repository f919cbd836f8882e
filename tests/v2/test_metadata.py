"""serving/v2/metadata.py: the server's metadata, and a model's from a signature as the
loader describes it. (From a real SavedModel: ``test_tf_signatures.py``.)"""
from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict
from importlib.metadata import version

import numpy as np
from google.protobuf import json_format

from serving.runtime.signature import PREDICT, SignatureSpec, TensorSpec
from serving.v2 import protos
from serving.v2.metadata import TensorMetadata, model_metadata, server_metadata
from tests.conftest import REPO


def test_server_metadata_names_us_our_version_and_extensions():
    meta = server_metadata()
    assert (meta.name, meta.version, meta.extensions) == (
        "tf-gateway", version("tf-gateway"), ("binary_tensor_data", "model_repository"))
    assert server_metadata() is meta  # read once
    message = json_format.ParseDict(asdict(meta), protos.ServerMetadataResponse())
    assert list(message.extensions) == ["binary_tensor_data", "model_repository"]


def test_the_version_is_what_the_command_line_says():
    result = subprocess.run([sys.executable, "-m", "serving", "--version"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["python", "-m", "serving", server_metadata().version]


def test_model_metadata_shapes_and_versions():
    spec = SignatureSpec("serving_default", PREDICT, {
        "b": TensorSpec("b", np.dtype(object), (None,), "DT_STRING"),
        "a": TensorSpec("a", np.dtype(np.float32), None, "DT_FLOAT"),
        "s": TensorSpec("s", np.dtype(np.int32), (), "DT_INT32"),
    }, {"y": TensorSpec("y", np.dtype(np.float64), (None, 3, None), "DT_DOUBLE")})
    meta = model_metadata("m", [12, 3], spec)
    assert meta.versions == ["3", "12"]  # by number, as strings
    assert meta.inputs == [TensorMetadata("a", "FP32", [-1]),  # unknown rank: any shape
                           TensorMetadata("b", "BYTES", [-1]),
                           TensorMetadata("s", "INT32", [])]  # a scalar
    assert meta.outputs == [TensorMetadata("y", "FP64", [-1, 3, -1])]
