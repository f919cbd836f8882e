"""What the v2 REST and gRPC tests share: the models their gateways serve, the half_plus_two
input, tritonclient inputs and the readiness checks made through either client."""
from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from serving.settings import ModelConfig, VersionPolicy
from tests.conftest import MODELS


def served_models(tfserving_dir: Path, *more: ModelConfig) -> tuple[ModelConfig, ...]:
    """half_plus_two; two_versions (123 and 124 both served, labels stable -> 123 and
    canary -> 124); text (BYTES) and vec16 (FP32 [-1, 16]); then ``more``: what the
    tritonclient tests of both protocols ask for (``assert_readiness``)."""
    return (
        ModelConfig(name="half_plus_two", base_path=str(tfserving_dir / "saved_model_half_plus_two_cpu")),
        ModelConfig(name="two_versions", base_path=str(tfserving_dir / "saved_model_half_plus_two_2_versions"),
                    version_policy=VersionPolicy(kind="all"), version_labels={"stable": 123, "canary": 124}),
        ModelConfig(name="text", base_path=str(MODELS / "shapes" / "text")),
        ModelConfig(name="vec16", base_path=str(MODELS / "shapes" / "vec16")),
        *more,
    )


def hostile_models_config(directory: Path, tfserving_dir: Path) -> Path:
    """A model config file in ``directory`` serving half_plus_two (FP32 ``x``) and text
    (BYTES ``text``), the two models the hostile-request tests aim at."""
    config = directory / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "half_plus_two" base_path: "{tfserving_dir / "saved_model_half_plus_two_cpu"}" '
        'model_platform: "tensorflow" }\n'
        f'  config {{ name: "text" base_path: "{MODELS / "shapes" / "text"}" model_platform: "tensorflow" }}\n'
        "}\n")
    return config


def x(values=(2.0, 3.0, 4.0)) -> np.ndarray:
    """half_plus_two's ``x``: one FP32 value a row."""
    return np.array(values, np.float32).reshape(-1, 1)


def infer_input(client: ModuleType, name: str, array: np.ndarray, datatype: str, **data: Any) -> Any:
    """An InferInput of ``client`` (tritonclient.http or tritonclient.grpc) holding ``array``;
    ``data`` goes to its ``set_data_from_numpy`` (tritonclient.http's ``binary_data``)."""
    tensor = client.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, **data)
    return tensor


def assert_readiness(client: Any) -> None:
    """Server and model readiness through a tritonclient client of either kind, against a
    gateway serving half_plus_two and two_versions (123 and 124, label stable -> 123)."""
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("half_plus_two")
    assert client.is_model_ready("two_versions", "124")
    assert client.is_model_ready("two_versions", "stable")
    assert not client.is_model_ready("two_versions", "7")
    assert not client.is_model_ready("two_versions", "no_such_label")
    assert not client.is_model_ready("nope")
