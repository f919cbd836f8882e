"""The gateway's one typed settings object.

Built once at start-up (``serving.cli.build_settings``: TF Serving's flags, then
``TFGW_*`` environment variables for the gateway's own knobs, then the config files the
flags name) and passed into the app factory. Nothing else reads flags, files or the
environment.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class VersionPolicy(BaseModel):
    """TF Serving's ``model_version_policy``: which versions under a base path are served."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = Field(1, ge=1, description="for 'latest': how many newest versions")
    versions: tuple[int, ...] = Field((), description="for 'specific': the version numbers")


class ModelConfig(BaseModel):
    """One entry of ``model_config_list`` (or ``--model_name``/``--model_base_path``)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1)
    base_path: str = Field(min_length=1, description="folder holding numeric version dirs")
    platform: str = "tensorflow"
    version_policy: VersionPolicy = VersionPolicy()
    version_labels: dict[str, int] = Field(default_factory=dict)


class BatchingConfig(BaseModel):
    """TF Serving's ``BatchingParameters`` (the ``--batching_parameters_file``).

    The batch timeout is an upper bound: the batcher releases a batch earlier when its
    learned cost model says waiting for more rows is not worth it.
    """

    model_config = ConfigDict(frozen=True)

    max_batch_size: int = Field(128, ge=1)
    batch_timeout_micros: int = Field(2000, ge=0)
    max_enqueued_batches: int = Field(64, ge=1)
    num_batch_threads: int = Field(1, ge=1)
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    @model_validator(mode="after")
    def _check_allowed_sizes(self) -> BatchingConfig:
        sizes = self.allowed_batch_sizes
        if sizes:
            if list(sizes) != sorted(set(sizes)) or sizes[0] < 1:
                raise ValueError("allowed_batch_sizes must be positive and strictly increasing")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(
                    f"the last of allowed_batch_sizes ({sizes[-1]}) must equal "
                    f"max_batch_size ({self.max_batch_size})"
                )
        return self


class Settings(BaseSettings):
    """Everything the gateway is configured with. Field names follow TF Serving's flags."""

    model_config = SettingsConfigDict(env_prefix="TFGW_", frozen=True, extra="forbid")

    port: int = Field(8500, ge=0, le=65535, description="gRPC port (0: no gRPC server)")
    rest_api_port: int = Field(8501, ge=0, le=65535, description="REST port (0: none)")
    host: str = Field("0.0.0.0", description="address both servers bind")
    models: tuple[ModelConfig, ...] = Field(default=(), description="the models to serve")
    enable_batching: bool = False
    batching: BatchingConfig = BatchingConfig()
    metrics_path: str | None = Field("/metrics", description="Prometheus path; None: off")
    upstream: str | None = Field(
        None, description="HOST:PORT (or dns:///NAME:PORT) of a TF Serving PredictionService "
        "to send merged batches to, instead of running models in process")
    rest_api_timeout_in_ms: int = Field(30000, ge=1, description="default request deadline")
    max_request_bytes: int = Field(64 << 20, ge=1, description="larger bodies get 413")
    max_rows_per_request: int = Field(100_000, ge=1, description="more rows get 413")
    drain_timeout_seconds: float = Field(30.0, ge=0, description="SIGTERM: time to finish")
    model_config_file_poll_wait_seconds: int = Field(0, ge=0, description="0: read once")
    file_system_poll_wait_seconds: float = Field(
        1.0, ge=0, description="how often base paths are scanned for new versions; 0: once")
    model_config_file: str | None = None
