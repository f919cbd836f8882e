"""Command line: TF Serving's own flags and config files → one ``Settings``.

Users switching from TF Serving start the gateway with the command line they have
(``--port=8500 --rest_api_port=8501 --model_name=x --model_base_path=/models/x``, or
``--model_config_file=...``, ``--enable_batching --batching_parameters_file=...``).
TF Serving flags that have no meaning here are accepted and ignored with one warning each,
so existing command lines keep working; the few whose silent loss would change security or
what is served (ALTS, UNIX sockets, other platforms) are refused. Unknown flags are errors.

Precedence: explicit flags, then ``TFGW_*`` environment variables, then defaults. This
module imports neither TensorFlow nor anything that does, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from pydantic import ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource

from serving.auth import read_token_file
from serving.logs import setup_logging
from serving.model_roots import ModelRoots
from serving.settings import ModelConfig, Settings
from serving.tf_noise import import_tensorflow
from serving.tfs_config import (
    ConfigError,
    describe_validation_error,
    read_batching_parameters_file,
    read_model_config_file,
    read_monitoring_config_file,
    read_ssl_config_file,
    resolve_base_path,
)
from serving.version import version

log = logging.getLogger(__name__)

#: Real TF Serving flags (tensorflow_serving/model_servers/main.cc) that tune its C++
#: runtime, loader or TPU/TFLite paths: accepted, warned about, ignored.
IGNORED_TFS_FLAGS = (
    "allow_version_labels_for_unavailable_models", "enable_grpc_healthcheck_service",
    "enable_model_warmup", "enable_per_model_batching_parameters", "enable_profiler",
    "enable_signature_method_name_check",
    "flush_filesystem_caches", "grpc_channel_arguments",
    "grpc_max_threads",
    "mixed_precision", "num_load_threads", "num_request_iterations_for_warmup",
    "num_tflite_interpreters_per_pool", "num_tflite_pools", "num_unload_threads",
    "per_process_gpu_memory_fraction", "prefer_tflite_model",
    "remove_unused_fields_from_bundle_metagraph",
    "rest_api_num_threads", "skip_initialize_tpu", "tensorflow_session_config_file",
    "thread_pool_factory_config_file",
    "xla_cpu_compilation_enabled", "xla_gpu_compilation_enabled",
)

#: TF Serving flags whose silent loss would be unsafe: refused unless empty/false
#: (``saved_model_tags`` unless it is the default ``serve``).
REFUSED_TFS_FLAGS: Mapping[str, str] = {
    "use_alts_credentials": "ALTS is not supported",
    "grpc_socket_path": "gRPC on a UNIX socket is not supported; use --port",
    "platform_config_file": "only the TensorFlow SavedModel platform is served",
    "saved_model_tags": "only the 'serve' tag set is loaded",
}

#: Flags that map one-to-one onto a ``Settings`` field of the same name.
_SETTINGS_FLAGS = (
    "port", "rest_api_port", "host", "grpc_server", "grpc_compression", "enable_batching",
    "rest_api_timeout_in_ms",
    "model_config_file_poll_wait_seconds", "file_system_poll_wait_seconds", "upstream", "tf2_session",
    "tf2_session_live_calls", "tf_session_direct_call", "tensorflow_intra_op_parallelism",
    "tensorflow_inter_op_parallelism", "tensorflow_session_parallelism",
    "max_request_bytes", "max_rows_per_request",
    "drain_timeout_seconds", "max_num_load_retries", "load_retry_interval_micros",
    "rest_api_enable_cors_support", "rest_api_ssl", "enable_reload_config_api", "model_roots",
    "enable_serialization_as_tensor_content", "auth_exempt", "rest_api_docs", "rest_one_write",
    "prediction_store", "prediction_key_field", "prediction_store_timeout_ms", "verbose",
)
_COMPAT_PREFIX = "compat__"
_FALSE_WORDS = ("", "false", "0", "no")


class UsageError(ConfigError):
    """The command line itself is malformed (argparse's errors); exits with status 2."""


class _Parser(argparse.ArgumentParser):
    """Raises instead of exiting, so ``build_settings`` is testable and ``main`` decides."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parse_bool(text: str) -> bool:
    """TF Serving's boolean syntax: ``--flag``, ``--flag=true``, ``--flag=false`` (and 1/0)."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _prog() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m serving" if name in ("", "__main__.py", "-c") else name


#: (group, flag, type, metavar, help); help of a ``Settings`` field gets its default and env name.
_FLAGS: tuple[tuple[str, str, Any, str, str], ...] = (
    ("tfs", "port", int, "N", "gRPC port; 0: no gRPC"),
    ("tfs", "rest_api_port", int, "N", "HTTP/REST port; 0: no REST"),
    ("tfs", "model_name", str, "NAME", "name of the one model (default: default)"),
    ("tfs", "model_base_path", str, "DIR", "folder of the one model's numeric version folders"),
    ("tfs", "model_config_file", str, "FILE", "text ModelServerConfig: a model_config_list"),
    ("tfs", "model_config_file_poll_wait_seconds", int, "S",
     "re-read --model_config_file every S seconds; 0: once"),
    ("tfs", "file_system_poll_wait_seconds", float, "S",
     "look for new model versions every S seconds; 0: at start only"),
    ("tfs", "enable_batching", parse_bool, "BOOL", "batch requests together"),
    ("tfs", "batching_parameters_file", str, "FILE", "text BatchingParameters"),
    ("tfs", "monitoring_config_file", str, "FILE", "text MonitoringConfig (Prometheus path)"),
    ("tfs", "rest_api_timeout_in_ms", int, "MS", "default request deadline"),
    ("tfs", "ssl_config_file", str, "FILE",
     "text SSLConfig: TLS on the gRPC port (server_key, server_cert, custom_ca, client_verify)"),
    ("tfs", "rest_api_enable_cors_support", parse_bool, "BOOL", ""),
    ("tfs", "enable_serialization_as_tensor_content", parse_bool, "BOOL", ""),
    ("tfs", "max_num_load_retries", int, "N",
     "retry a failed version load N times after the first attempt; 0: once"),
    ("tfs", "load_retry_interval_micros", int, "US",
     "time between load retries, in microseconds; negative: no wait"),
    ("tfs", "tensorflow_intra_op_parallelism", int, "N", ""),
    ("tfs", "tensorflow_inter_op_parallelism", int, "N", ""),
    ("tfs", "tensorflow_session_parallelism", int, "N", ""),
    ("own", "host", str, "ADDR", "address both servers bind"),
    ("own", "grpc_server", str, "loop|aio", ""),
    ("own", "grpc_compression", str, "none|deflate|gzip", ""),
    ("own", "upstream", str, "HOST:PORT",
     "send merged batches to this TF Serving gRPC address instead of loading models here"),
    ("own", "tf2_session", parse_bool, "BOOL", ""),
    ("own", "tf2_session_live_calls", int, "N", ""),
    ("own", "tf_session_direct_call", parse_bool, "BOOL", ""),
    ("own", "max_request_bytes", int, "N", "larger bodies get 413"),
    ("own", "max_rows_per_request", int, "N", "more rows get 413"),
    ("own", "drain_timeout_seconds", float, "S", "on SIGTERM, time to finish in-flight work"),
    ("own", "rest_api_ssl", parse_bool, "BOOL", ""),
    ("own", "auth_token_file", str, "FILE",
     "bearer tokens, one per line: every request must carry one (README, Security)"),
    ("own", "auth_exempt", str, "PATH,...", ""),
    ("own", "rest_api_docs", parse_bool, "BOOL", ""),
    ("own", "rest_one_write", parse_bool, "BOOL", ""),
    ("own", "model_roots", str, "DIR,...", ""),
    ("own", "enable_reload_config_api", parse_bool, "BOOL", ""),
    ("own", "prediction_store", str, "URL", ""),
    ("own", "prediction_key_field", str, "NAME", ""),
    ("own", "prediction_store_timeout_ms", float, "MS", ""),
    ("own", "verbose", parse_bool, "BOOL", ""),
)


def build_parser() -> argparse.ArgumentParser:
    """The parser: TF Serving's names and syntax; every default is left to ``Settings``."""
    parser = _Parser(
        prog=_prog(),
        description="A batching gateway that speaks TensorFlow Serving's APIs and flags.",
        epilog="Also accepted and ignored with a warning, for TF Serving compatibility: "
        + " ".join(f"--{name}" for name in IGNORED_TFS_FLAGS),
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,  # absent flags stay absent: env vars can fill them
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    groups = {
        "tfs": parser.add_argument_group("TF Serving flags"),
        "own": parser.add_argument_group("gateway flags"),
    }
    for group, name, kind, metavar, text in _FLAGS:
        if name in _SETTINGS_FLAGS:
            field = Settings.model_fields[name]
            text = text or field.description or ""  # help written once, on the field
            text += f" (default: {field.default}; env TFGW_{name.upper()})"
        extra: dict[str, Any] = {"nargs": "?", "const": True} if kind is parse_bool else {}
        groups[group].add_argument(f"--{name}", type=kind, metavar=metavar, help=text, **extra)
    for name in (*IGNORED_TFS_FLAGS, *REFUSED_TFS_FLAGS):
        parser.add_argument(f"--{name}", dest=_COMPAT_PREFIX + name, nargs="?", const="true",
                            help=argparse.SUPPRESS)
    return parser


def build_settings(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    """Parse ``argv`` (without the program name) and read the files it names.

    ``environ`` replaces ``os.environ`` as the source of ``TFGW_*`` variables (for tests
    and embedding); ``None`` means the process environment. Raises ``ConfigError``.
    """
    args = vars(build_parser().parse_args(list(argv)))
    _check_compat_flags(args)
    values: dict[str, Any] = {name: args[name] for name in _SETTINGS_FLAGS if name in args}
    model_config_file = args.get("model_config_file") or None  # "" is unset, as in TF Serving
    values["models"] = _models(args, model_config_file)
    values["model_config_file"] = model_config_file and resolve_base_path(model_config_file)  # gs:// kept
    batching_file = args.get("batching_parameters_file") or None
    if batching_file:
        values["batching"] = read_batching_parameters_file(batching_file)
    monitoring_file = args.get("monitoring_config_file") or None
    if monitoring_file:
        values["metrics_path"] = read_monitoring_config_file(monitoring_file)
    ssl_file = args.get("ssl_config_file") or None
    if ssl_file:
        values["ssl_config"] = read_ssl_config_file(ssl_file)
    token_file = args.get("auth_token_file") or None
    if token_file:
        try:
            values["auth_tokens"] = read_token_file(token_file)
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise ConfigError(f"--auth_token_file: {error}") from None
    settings = _make_settings(values, environ)
    try:
        ModelRoots(settings.model_roots)
    except ValueError as err:
        raise ConfigError(f"--model_roots: {err}") from None
    if batching_file and not settings.enable_batching:
        raise ConfigError("--batching_parameters_file is set but batching is not enabled: "
                          "add --enable_batching (TF Serving refuses this too)")
    if settings.port and settings.port == settings.rest_api_port:
        raise ConfigError(f"--rest_api_port must differ from --port (both {settings.port})")
    if settings.tensorflow_session_parallelism and (settings.tensorflow_intra_op_parallelism
                                                    or settings.tensorflow_inter_op_parallelism):
        log.warning("--tensorflow_session_parallelism is ignored: --tensorflow_intra_op_parallelism or "
                    "--tensorflow_inter_op_parallelism is set (as in TF Serving)")
    return settings


def _check_compat_flags(args: Mapping[str, Any]) -> None:
    """Warn once per ignored TF Serving flag; refuse the unsafe ones when they are set."""
    for key, value in args.items():
        if not key.startswith(_COMPAT_PREFIX):
            continue
        name = key[len(_COMPAT_PREFIX):]
        if name in REFUSED_TFS_FLAGS:
            harmless = ("serve",) if name == "saved_model_tags" else _FALSE_WORDS
            if value.strip().lower() not in harmless:
                raise ConfigError(f"--{name}={value} is not supported: {REFUSED_TFS_FLAGS[name]}")
        log.warning("ignoring TF Serving flag --%s=%s: no effect in this gateway", name, value)


def _models(args: Mapping[str, Any], model_config_file: str | None) -> tuple[ModelConfig, ...]:
    """The models to serve: ``--model_config_file`` wins over ``--model_base_path``.

    As in TF Serving, whose Docker entrypoint always passes --model_name/--model_base_path,
    so users add --model_config_file on top of them.
    """
    base_path = args.get("model_base_path") or None
    if model_config_file:
        if base_path or "model_name" in args:
            log.warning("--model_name/--model_base_path are ignored with --model_config_file "
                        "(as in TF Serving)")
        return read_model_config_file(model_config_file)
    if not base_path:
        raise ConfigError("no model to serve: give --model_base_path=DIR (one model, named "
                          "by --model_name) or --model_config_file=FILE (a model_config_list)")
    name = args.get("model_name", "default")
    try:
        return (ModelConfig(name=name, base_path=resolve_base_path(base_path)),)
    except ValidationError as err:
        problem = describe_validation_error(err)
        raise ConfigError(f"--model_name/--model_base_path: {problem}") from None


def _make_settings(values: dict[str, Any], environ: Mapping[str, str] | None) -> Settings:
    """``Settings(**values)``: pydantic-settings fills what the flags left out from ``TFGW_*``."""
    try:
        if environ is None:
            return Settings(**values)
        # Resolve against ``environ`` in a subclass, then pass every field explicitly so
        # the process environment can no longer contribute anything.
        scoped = _settings_reading(environ)(**values)
        return Settings(**scoped.model_dump())
    except ValidationError as err:
        problem = describe_validation_error(err)
        raise ConfigError(f"invalid settings (flags or TFGW_* variables): {problem}") from None
    except ValueError as err:  # pydantic-settings' SettingsError: an env value is not JSON
        raise ConfigError(f"invalid TFGW_* environment variable: {err}") from None


def _settings_reading(environ: Mapping[str, str]) -> type[Settings]:
    """A ``Settings`` whose environment source is ``environ`` instead of ``os.environ``."""

    class _MappingEnvSource(EnvSettingsSource):
        # pydantic-settings' own DotEnvSettingsSource overrides this same hook.
        def _load_env_vars(self) -> Mapping[str, str | None]:
            if self.case_sensitive:
                return dict(environ)
            return {key.lower(): value for key, value in environ.items()}

    class _ScopedSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return init_settings, _MappingEnvSource(settings_cls)

    return _ScopedSettings


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: exit 1 with one ``error: ...`` line on a bad configuration or a port it
    cannot listen on (2 on bad usage)."""
    setup_logging()
    try:
        settings = build_settings(sys.argv[1:] if argv is None else argv)
    except UsageError as err:
        build_parser().print_usage(sys.stderr)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    import_tensorflow(settings.verbose)  # only once the config is known good
    from serving.server import StartupError, run

    try:
        run(settings)
    except StartupError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
