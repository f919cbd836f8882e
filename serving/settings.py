"""The gateway's one typed settings object.

Built once at start-up (``serving.cli.build_settings``: TF Serving's flags, then
``TFGW_*`` environment variables for the gateway's own knobs, then the config files the
flags name) and passed into the app factory. Nothing else reads flags, files or the
environment.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from serving.precomputed.api import LOOKUP_TIMEOUT_S
from serving.precomputed.urls import parse_store_url


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
    learned cost model says waiting for more rows is not worth it. README "How batching
    works" has a table of what each field does here.
    """

    model_config = ConfigDict(frozen=True)

    max_batch_size: int = Field(
        128, ge=1, description="rows per model call; with enable_large_batch_splitting, the "
        "most rows one request may have (TF Serving's input_batch_size_limit)")
    batch_timeout_micros: int = Field(
        2000, ge=0, description="the longest a batch waits for more rows (an upper bound)")
    max_enqueued_batches: int = Field(
        64, ge=1, description="queue bound, in batches of the execution batch size")
    num_batch_threads: int = Field(1, ge=1, description="model calls that run at once")
    thread_pool_name: str = Field(
        "model_server_batch_threads", min_length=1,
        description="names the model threads and labels the batching_session metrics "
        "(TF Serving's default without a batching file; 'batch_threads' with one)")
    enable_large_batch_splitting: bool = Field(
        False, description="split requests into model calls of max_execution_batch_size rows; "
        "max_batch_size then bounds a request")
    max_execution_batch_size: int | None = Field(
        None, ge=1, description="with enable_large_batch_splitting: rows per model call "
        "(unset: max_batch_size)")
    allowed_batch_sizes: tuple[int, ...] = Field(
        (), description="pad each call to the smallest of these that holds its rows")
    pad_variable_length_inputs: bool = Field(
        False, description="accepted; requests whose row shapes differ run in separate calls")

    @property
    def execution_batch_size(self) -> int:
        """The most rows one model call gets."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size is not None:
            return self.max_execution_batch_size
        return self.max_batch_size

    @property
    def max_request_rows(self) -> int | None:
        """The most rows one request may have (TF Serving's input_batch_size_limit when it
        splits requests); None: any, split across calls (the gateway's own default)."""
        return self.max_batch_size if self.enable_large_batch_splitting else None

    @model_validator(mode="after")
    def _check_allowed_sizes(self) -> BatchingConfig:
        if self.execution_batch_size > self.max_batch_size:
            raise ValueError(
                f"max_execution_batch_size ({self.execution_batch_size}) must not exceed "
                f"max_batch_size ({self.max_batch_size}) when enable_large_batch_splitting is on"
            )
        sizes = self.allowed_batch_sizes
        if sizes:
            if list(sizes) != sorted(set(sizes)) or sizes[0] < 1:
                raise ValueError("allowed_batch_sizes must be positive and strictly increasing")
            if sizes[-1] != self.execution_batch_size:
                which = ("max_execution_batch_size" if self.enable_large_batch_splitting
                         else "max_batch_size")
                raise ValueError(
                    f"the last of allowed_batch_sizes ({sizes[-1]}) must equal "
                    f"{which} ({self.execution_batch_size})"
                )
        return self


class TLSConfig(BaseModel):
    """TF Serving's ``SSLConfig`` (the ``--ssl_config_file``), PEM text read and checked."""

    model_config = ConfigDict(frozen=True)

    server_key: SecretStr = Field(description="the server's private key, PEM")
    server_cert: str = Field(min_length=1, description="the server's certificate chain, PEM")
    custom_ca: str = Field("", description="PEM CA certificates client certificates must "
                           "chain to; empty: none")
    client_verify: bool = Field(False, description="require a client certificate signed by "
                                "custom_ca (mutual TLS)")

    @model_validator(mode="after")
    def _check_client_verify(self) -> TLSConfig:
        if self.client_verify and not self.custom_ca:
            raise ValueError("client_verify needs custom_ca, the CA certificates client "
                             "certificates are checked against")
        return self


_TOKEN = re.compile(r"[\x21-\x7e]+")
"""A bearer token as RFC 6750 allows one (visible ASCII), never empty."""


class Settings(BaseSettings):
    """Everything the gateway is configured with. Field names follow TF Serving's flags."""

    # hide_input_in_errors: a refused value is never echoed (a store URL may hold a password).
    model_config = SettingsConfigDict(env_prefix="TFGW_", frozen=True, extra="forbid",
                                      hide_input_in_errors=True)

    port: int = Field(8500, ge=0, le=65535, description="gRPC port (0: no gRPC server)")
    rest_api_port: int = Field(8501, ge=0, le=65535, description="REST port (0: none)")
    host: str = Field("0.0.0.0", description="address both servers bind")
    grpc_server: Literal["loop", "aio"] = Field(
        "loop", description="which server answers gRPC: 'loop', grpc's C core polled by one "
        "thread of ours (grpc's private cygrpc layer; about a third of grpc.aio's CPU per call), "
        "or 'aio', grpc.aio's public API; both on the event loop that serves REST")
    grpc_compression: Literal["none", "deflate", "gzip"] = Field(
        "none", description="compress gRPC answers with this algorithm (clients that do not "
        "accept it get them uncompressed); compressed requests are read whatever this says")
    models: tuple[ModelConfig, ...] = Field(default=(), description="the models to serve")
    enable_batching: bool = False
    batching: BatchingConfig = BatchingConfig()
    metrics_path: str | None = Field("/metrics", description="Prometheus path; None: off")
    upstream: str | None = Field(
        None, description="HOST:PORT of a TF Serving PredictionService to send merged batches "
        "to, instead of running models in process; dns:///NAME:PORT (every pod of a headless "
        "Service) or ipv4:A:P,B:P names a fleet, each call going to a pod that has its version")
    rest_api_timeout_in_ms: int = Field(30000, ge=1, description="default request deadline")
    tf2_session: bool = Field(
        True, description="run a TF2 SavedModel in a TF1 Session, as TF Serving does, if its "
        "recorded warm-up requests (else its first live calls) are answered there as by its "
        "functions (a call costs a fifth of the CPU); false: always its functions")
    tf_session_direct_call: bool = Field(
        True, description="call a TF1 Session through TensorFlow's internal C entry, as TF Serving's "
        "Session::Run does (no Python-side check of feed shapes); false: the public Session.run, "
        "which also refuses a feed whose shape differs from its placeholder's declared shape")
    tf2_session_live_calls: int = Field(
        100, ge=0, description="a TF2 model without a recorded warm-up file serves from its "
        "functions while its first N model calls are compared with a TF1 Session in the "
        "background, then moves if they all agree; 0: decide at load on synthetic requests")
    tensorflow_intra_op_parallelism: int = Field(
        0, ge=0, description="threads one TensorFlow op may use to run in parallel (TF1 Sessions' "
        "ConfigProto, and tf.config.threading for TF2 functions); 0: TensorFlow's default, one per core")
    tensorflow_inter_op_parallelism: int = Field(
        0, ge=0, description="TensorFlow ops that may run at once (as above); 0: TensorFlow's "
        "default, one per core")
    tensorflow_session_parallelism: int = Field(
        0, ge=0, description="both of the above, when neither is set (TF Serving's older flag, "
        "applied as TF Serving applies it); 0: TensorFlow's default")
    max_request_bytes: int = Field(64 << 20, ge=1, description="larger bodies get 413")
    max_rows_per_request: int = Field(100_000, ge=1, description="more rows get 413")
    drain_timeout_seconds: float = Field(30.0, ge=0, description="SIGTERM: time to finish")
    model_config_file_poll_wait_seconds: int = Field(0, ge=0, description="0: read once")
    file_system_poll_wait_seconds: float = Field(
        1.0, ge=0, description="how often base paths are scanned for new versions; 0: once")
    max_num_load_retries: int = Field(
        5, ge=0, description="retries of a failed version load after the first attempt; 0: none")
    load_retry_interval_micros: int = Field(
        60_000_000, description="time between load retries; negative: no wait")
    model_config_file: str | None = None
    ssl_config: TLSConfig | None = Field(
        None, description="TLS of the gRPC port (and of REST with rest_api_ssl), from "
        "--ssl_config_file; None: plaintext")
    rest_api_ssl: bool = Field(
        False, description="serve REST over TLS too, with --ssl_config_file's key, certificate "
        "and client_verify (TF Serving applies it to gRPC only)")
    rest_api_enable_cors_support: bool = Field(
        False, description="TF Serving's CORS headers on every /v1/ answer "
        "(Access-Control-Allow-Origin: *)")
    auth_tokens: tuple[SecretStr, ...] = Field(
        (), description="bearer tokens a caller must present (REST 'Authorization: Bearer T', "
        "gRPC 'authorization' metadata), from --auth_token_file; empty: no authentication")
    auth_exempt: Annotated[tuple[str, ...] | None, NoDecode] = Field(
        None, description="comma-separated REST paths and gRPC methods open without a token "
        "(an entry ending in '/' opens everything under it); unset: /healthz, /readyz, the "
        "metrics path and gRPC health")
    rest_api_docs: bool = Field(
        True, description="serve /docs and /openapi.json: TF Serving's REST API as OpenAPI")
    verbose: bool = Field(
        False, description="show TensorFlow's own start-up lines (C++ INFO and warnings: GPU probing, "
        "CPU instructions, deprecations), which are left out by default")
    rest_one_write: bool = Field(
        True, description="send each REST answer in one write (a subclass of uvicorn's "
        "httptools protocol, not its public API: ~2 -> 1 sends per answer); false: uvicorn's own")
    enable_serialization_as_tensor_content: bool = Field(
        False, description="gRPC Predict answers carry each output in tensor_content (TensorFlow's "
        "AsProtoTensorContent), as TF Serving's flag does; false: in its typed field (float_val, "
        "int64_val, string_val, ...), TF Serving's default, which client code reading "
        "outputs[name].float_val needs")
    enable_reload_config_api: bool = Field(
        True, description="answer ModelService.HandleReloadConfigRequest (base paths within "
        "model_roots only); false: refuse every call with PERMISSION_DENIED")
    model_roots: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma-separated folders or gs://BUCKET/PREFIX a reload request may "
        "point base paths into; empty: the folder holding each model configured at start "
        "(README, Security)")
    prediction_store: SecretStr | None = Field(
        None, description="URL of precomputed predictions to answer keyed Predict instances "
        "from (sqlite:///ABSOLUTE/PATH.db or redis://HOST:PORT/DB), the model answering the "
        "rest; needs prediction_key_field")
    prediction_key_field: str | None = Field(
        None, description="the field of each Predict instance (REST instances or inputs, a "
        "gRPC input) holding its key in the prediction store; removed before the model sees "
        "the inputs unless the signature has an input of that name")
    prediction_store_timeout_ms: float = Field(
        LOOKUP_TIMEOUT_S * 1000, gt=0, description="the longest a store lookup may take "
        "before its batch goes to the model instead (shorter when the deadline is near)")

    @field_validator("prediction_store", "prediction_key_field", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value  # "" is unset, as TF Serving's file flags

    @field_validator("prediction_store")
    @classmethod
    def _check_store_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_store_url(value.get_secret_value())  # BadStoreUrl: its message hides a password
        return value

    @field_validator("auth_tokens")
    @classmethod
    def _check_tokens(cls, tokens: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for token in tokens:  # the message never shows a token
            if not _TOKEN.fullmatch(token.get_secret_value()):
                raise ValueError("a bearer token must be one or more visible ASCII characters, "
                                 "without spaces (an empty token would let anyone in)")
        return tokens

    @field_validator("auth_exempt", mode="before")
    @classmethod
    def _split_exempt(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(path.strip() for path in value.split(",") if path.strip())
        return value

    @field_validator("model_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(root.strip() for root in value.split(",") if root.strip())
        return value

    @property
    def op_parallelism(self) -> tuple[int, int]:
        """(intra-op, inter-op) TensorFlow threads, 0 for TensorFlow's default, as TF Serving's
        server.cc derives them: the two flags if either is set, else session_parallelism for both."""
        if self.tensorflow_intra_op_parallelism or self.tensorflow_inter_op_parallelism:
            return self.tensorflow_intra_op_parallelism, self.tensorflow_inter_op_parallelism
        return (self.tensorflow_session_parallelism,) * 2

    @model_validator(mode="after")
    def _check_parallelism(self) -> Settings:
        if (self.tensorflow_intra_op_parallelism and self.tensorflow_inter_op_parallelism
                and self.tensorflow_session_parallelism):
            raise ValueError("either set tensorflow_session_parallelism or tensorflow_intra_op_parallelism "
                             "and tensorflow_inter_op_parallelism, not all three (TF Serving refuses this too)")
        return self

    @model_validator(mode="after")
    def _check_tls(self) -> Settings:
        if self.rest_api_ssl and self.ssl_config is None:
            raise ValueError("rest_api_ssl needs an SSL config (--ssl_config_file)")
        return self

    @model_validator(mode="after")
    def _check_prediction_store(self) -> Settings:
        if self.prediction_store is not None and self.prediction_key_field is None:
            raise ValueError("prediction_store needs prediction_key_field: the field of each "
                             "instance that holds its key in the store")
        if self.prediction_key_field is not None and self.prediction_store is None:
            raise ValueError("prediction_key_field is set but prediction_store is not: give "
                             "the store's URL too")
        return self
