"""TF Serving's text-proto config files, read into the pydantic models of ``serving.settings``.

Users switching from TF Serving keep their files unchanged: ``--model_config_file``
(``ModelServerConfig``), ``--batching_parameters_file`` (``BatchingParameters``),
``--monitoring_config_file`` (``MonitoringConfig``) and ``--ssl_config_file``
(``SSLConfig``) parse with protobuf's own text format into messages with TF Serving's field
names and numbers. ``tensorflow-serving-api`` ships ``ModelServerConfig`` but not the
others, so those are declared here from TF Serving's ``session_bundle_config.proto``,
``monitoring_config.proto`` and ``ssl_config.proto``.

Every problem (missing file, malformed text, unsupported or invalid values) is raised as
one ``ConfigError`` whose message names the file and what is wrong.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory, text_format, wrappers_pb2
from pydantic import ValidationError

from serving.runtime import storage
from serving.settings import BatchingConfig, ModelConfig, TLSConfig, VersionPolicy

log = logging.getLogger(__name__)

#: TF Serving serves Prometheus metrics here when ``prometheus_config.path`` is empty
#: (``PrometheusExporter::kPrometheusPath``). We keep it so scrape configs written for
#: TF Serving keep working; without a monitoring file the gateway's own default applies.
TFS_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"

_PLATFORMS = ("", "tensorflow")
_MODEL_TYPE_OTHER = 2  # deprecated ModelConfig.model_type enum: OTHER (not TensorFlow)


class ConfigError(Exception):
    """A flag or config file the gateway cannot start with; the message says which and why."""


# --- messages tensorflow-serving-api does not ship ------------------------------------

_F = descriptor_pb2.FieldDescriptorProto


def _field(
    name: str, number: int, ftype: int, *, type_name: str = "", repeated: bool = False
) -> _F:
    label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    field = _F(name=name, number=number, type=ftype, label=label)
    if type_name:  # set only for message fields: an empty type_name still counts as set
        field.type_name = type_name
    return field


def _build_pool() -> descriptor_pool.DescriptorPool:
    """A private pool: our copies can never clash with TF Serving's in the default pool."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    i64, string = ".google.protobuf.Int64Value", ".google.protobuf.StringValue"
    boolean = ".google.protobuf.BoolValue"
    batching = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    batching.message_type.add(name="BatchingParameters").field.extend([
        _field("max_batch_size", 1, _F.TYPE_MESSAGE, type_name=i64),
        _field("batch_timeout_micros", 2, _F.TYPE_MESSAGE, type_name=i64),
        _field("max_enqueued_batches", 3, _F.TYPE_MESSAGE, type_name=i64),
        _field("num_batch_threads", 4, _F.TYPE_MESSAGE, type_name=i64),
        _field("thread_pool_name", 5, _F.TYPE_MESSAGE, type_name=string),
        _field("enable_large_batch_splitting", 8, _F.TYPE_MESSAGE, type_name=boolean),
        _field("max_execution_batch_size", 9, _F.TYPE_MESSAGE, type_name=i64),
        _field("allowed_batch_sizes", 6, _F.TYPE_INT64, repeated=True),
        _field("pad_variable_length_inputs", 7, _F.TYPE_BOOL),
    ])
    monitoring = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
    )
    monitoring.message_type.add(name="PrometheusConfig").field.extend([
        _field("enable", 1, _F.TYPE_BOOL),
        _field("path", 2, _F.TYPE_STRING),
    ])
    monitoring.message_type.add(name="MonitoringConfig").field.extend([
        _field("prometheus_config", 1, _F.TYPE_MESSAGE,
               type_name=".tensorflow.serving.PrometheusConfig"),
    ])
    ssl_file = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/ssl_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
    )
    ssl_file.message_type.add(name="SSLConfig").field.extend([
        _field("server_key", 1, _F.TYPE_STRING),
        _field("server_cert", 2, _F.TYPE_STRING),
        _field("custom_ca", 3, _F.TYPE_STRING),
        _field("client_verify", 4, _F.TYPE_BOOL),
    ])
    for file_proto in (batching, monitoring, ssl_file):
        pool.AddSerializedFile(file_proto.SerializeToString())
    return pool


_POOL = _build_pool()
BatchingParameters: type[message.Message] = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))
MonitoringConfig: type[message.Message] = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))
SSLConfig: type[message.Message] = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("tensorflow.serving.SSLConfig"))


# --- reading ----------------------------------------------------------------------------

def _parse_text_file(
    path: str | os.PathLike[str], message_class: type[message.Message], what: str
) -> Any:
    """Read ``path`` (local, ``gs://`` or ``s3://``) as a text proto of ``message_class``;
    protobuf's error text is kept."""
    where = f"{what} {str(path)!r}"
    try:
        text = storage.read_bytes(path).decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ConfigError(f"{where}: cannot read it: {reason}") from None
    try:
        return text_format.Parse(text, message_class())
    except text_format.ParseError as err:
        kind = message_class.DESCRIPTOR.full_name
        raise ConfigError(f"{where}: not a valid {kind} text proto: {err}") from None


def describe_validation_error(err: ValidationError) -> str:
    """pydantic's errors on one line: ``field: problem; field: problem``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in err.errors()
    )


def resolve_base_path(base_path: str) -> str:
    """Make a local relative path absolute against the current directory, as TF Serving sees it.

    URLs (``gs://...``) are left alone: they are not relative to anything here.
    """
    if "://" in base_path:
        return base_path
    return os.path.abspath(base_path)


def read_model_config_file(path: str | os.PathLike[str]) -> tuple[ModelConfig, ...]:
    """``--model_config_file``: TF Serving's ``ModelServerConfig`` with a ``model_config_list``."""
    # Imported here, not at the top: keeps ``--help`` free of tensorflow_serving (which
    # today does not pull in TensorFlow for config protos, but its ``apis`` package does).
    from tensorflow_serving.config import model_server_config_pb2

    config = _parse_text_file(path, model_server_config_pb2.ModelServerConfig, "model config file")
    return models_from_server_config(config, f"model config file {str(path)!r}")


def models_from_server_config(config: Any, where: str) -> tuple[ModelConfig, ...]:
    """A ``ModelServerConfig`` proto (from a file or a ReloadConfigRequest) → ModelConfigs."""
    choice = config.WhichOneof("config")
    if choice == "custom_model_config":
        raise ConfigError(f"{where}: custom_model_config is not supported; use model_config_list")
    if choice is None or not config.model_config_list.config:
        raise ConfigError(f"{where}: model_config_list lists no models")
    models: list[ModelConfig] = []
    for index, entry in enumerate(config.model_config_list.config, start=1):
        model = _model_from_proto(entry, f"{where}, model #{index} ({entry.name or 'unnamed'})")
        if any(m.name == model.name for m in models):
            raise ConfigError(f"{where}: model name {model.name!r} is used more than once")
        models.append(model)
    return tuple(models)


def _model_from_proto(entry: Any, where: str) -> ModelConfig:
    if not entry.name:
        raise ConfigError(f"{where}: name is empty")
    if not entry.base_path:
        raise ConfigError(f"{where}: base_path is empty")
    if entry.model_platform not in _PLATFORMS or entry.model_type == _MODEL_TYPE_OTHER:
        shown = entry.model_platform or "OTHER (model_type)"
        raise ConfigError(f"{where}: model_platform {shown!r} is not supported; only 'tensorflow'")
    if entry.HasField("logging_config"):
        log.warning("%s: logging_config (request logging) is not supported; ignored", where)
    try:
        return ModelConfig(
            name=entry.name,
            base_path=resolve_base_path(entry.base_path),
            platform="tensorflow",
            version_policy=_version_policy(entry.model_version_policy, where),
            version_labels=dict(entry.version_labels),
        )
    except ValidationError as err:
        raise ConfigError(f"{where}: {describe_validation_error(err)}") from None


def _version_policy(policy: Any, where: str) -> VersionPolicy:
    """TF Serving's ``ServableVersionPolicy``; unset means ``latest`` with one version."""
    kind = policy.WhichOneof("policy_choice")
    if kind is None:
        return VersionPolicy()
    if kind == "latest":
        # num_versions 0 (unset) means 1 in TF Serving.
        return VersionPolicy(kind="latest", num_versions=policy.latest.num_versions or 1)
    if kind == "all":
        return VersionPolicy(kind="all")
    versions = tuple(sorted(set(policy.specific.versions)))
    if not versions:
        raise ConfigError(f"{where}: model_version_policy specific lists no versions")
    return VersionPolicy(kind="specific", versions=versions)


_WRAPPED_BATCHING_FIELDS = (
    "max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads",
    "thread_pool_name", "enable_large_batch_splitting", "max_execution_batch_size",
)
#: TF Serving's thread pool name when a batching file leaves it unset (SharedBatchScheduler's
#: default); without a file TF Serving uses ``BatchingConfig``'s default.
_FILE_THREAD_POOL_NAME = "batch_threads"


def read_batching_parameters_file(path: str | os.PathLike[str]) -> BatchingConfig:
    """``--batching_parameters_file``; fields left unset take ``BatchingConfig``'s defaults.

    Every field of TF Serving's message is accepted; a field set in the file that the
    gateway does not act on is logged with the reason (README, "How batching works").
    """
    params = _parse_text_file(path, BatchingParameters, "batching parameters file")
    values: dict[str, Any] = {
        name: getattr(params, name).value
        for name in _WRAPPED_BATCHING_FIELDS
        if params.HasField(name)
    }
    values.setdefault("thread_pool_name", _FILE_THREAD_POOL_NAME)
    if params.allowed_batch_sizes:
        values["allowed_batch_sizes"] = tuple(params.allowed_batch_sizes)
    values["pad_variable_length_inputs"] = params.pad_variable_length_inputs
    try:
        config = BatchingConfig(**values)
    except ValidationError as err:
        problem = describe_validation_error(err)
        raise ConfigError(f"batching parameters file {str(path)!r}: {problem}") from None
    where = f"batching parameters file {str(path)!r}"
    if config.pad_variable_length_inputs:
        log.warning("%s: pad_variable_length_inputs is accepted but does nothing here: requests "
                    "whose inputs differ beyond dimension 0 are not padded to one shape, they run "
                    "in separate model calls (same answers, fewer rows per call)", where)
    if params.HasField("max_execution_batch_size") and not config.enable_large_batch_splitting:
        log.warning("%s: max_execution_batch_size is ignored without enable_large_batch_splitting "
                    "(as in TF Serving); model calls get up to max_batch_size rows", where)
    return config


def read_monitoring_config_file(path: str | os.PathLike[str]) -> str | None:
    """``--monitoring_config_file`` → the Prometheus path, or None when it is not enabled."""
    config = _parse_text_file(path, MonitoringConfig, "monitoring config file")
    prometheus = config.prometheus_config
    if not prometheus.enable:
        return None
    metrics_path = prometheus.path or TFS_PROMETHEUS_PATH
    if not metrics_path.startswith("/"):
        raise ConfigError(
            f"monitoring config file {str(path)!r}: prometheus_config.path "
            f"{metrics_path!r} must start with '/'"
        )
    return metrics_path


_PEM_BEGIN = "-----BEGIN "


def read_ssl_config_file(path: str | os.PathLike[str]) -> TLSConfig:
    """``--ssl_config_file``: TF Serving's ``SSLConfig``, its key and certificates checked.

    As in TF Serving, ``server_key``, ``server_cert`` and ``custom_ca`` hold PEM text; the
    gateway also takes the path of a PEM file in their place (relative paths against the
    current directory), which is what a mounted Kubernetes Secret gives.
    """
    from serving.tls import server_ssl_context  # the ssl module only: no TensorFlow

    where = f"SSL config file {str(path)!r}"
    proto = _parse_text_file(path, SSLConfig, "SSL config file")
    key = _pem_field(proto.server_key, "server_key", where)
    cert = _pem_field(proto.server_cert, "server_cert", where)
    custom_ca = _pem_field(proto.custom_ca, "custom_ca", where, required=False)
    if proto.client_verify and not custom_ca:
        raise ConfigError(f"{where}: client_verify needs custom_ca, the CA certificates "
                          "client certificates are checked against")
    config = TLSConfig(server_key=key, server_cert=cert, custom_ca=custom_ca,
                       client_verify=proto.client_verify)
    try:
        server_ssl_context(config)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    return config


def _pem_field(value: str, name: str, where: str, required: bool = True) -> str:
    """PEM text, given inline (TF Serving's form) or as the path of a PEM file."""
    value = value.strip()
    if not value:
        if required:
            raise ConfigError(f"{where}: {name} is empty")
        return ""
    if _PEM_BEGIN in value:
        return value + "\n"
    try:
        text = Path(value).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ConfigError(f"{where}: {name} is neither PEM text nor a readable PEM file: "
                          f"{value!r}: {reason}") from None
    if _PEM_BEGIN not in text:
        raise ConfigError(f"{where}: {name} file {value!r} holds no PEM block")
    return text
