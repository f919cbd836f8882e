"""TF Serving's flags and config files → ``Settings``, checked on TF Serving's own fixtures."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from serving.cli import IGNORED_TFS_FLAGS, UsageError, build_settings, main
from serving.settings import BatchingConfig, ModelConfig, Settings, VersionPolicy
from serving.tfs_config import TFS_PROMETHEUS_PATH, ConfigError

REPO = Path(__file__).resolve().parents[1]


def build(*argv: str, env: dict[str, str] | None = None) -> Settings:
    """``build_settings`` with an empty environment unless one is given."""
    return build_settings(list(argv), {} if env is None else env)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def model_config(tmp_path: Path, *entries: str) -> Path:
    body = ",\n".join(f"config: {{ {entry} }}" for entry in entries)
    return write(tmp_path / "models.config", f"model_config_list: {{\n{body}\n}}\n")


def gateway(*argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m serving ARGV`` in a clean process, without TFGW_* from this one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFGW_")}
    return subprocess.run(
        [sys.executable, "-m", "serving", *argv],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )


# --- flags ---------------------------------------------------------------------------

def test_tf_serving_single_model_command_line() -> None:
    settings = build("--port=8500", "--rest_api_port=8501", "--model_name=x",
                     "--model_base_path=/models/x")
    assert settings.port == 8500 and settings.rest_api_port == 8501
    assert settings.models == (ModelConfig(name="x", base_path="/models/x"),)
    assert settings.model_config_file is None
    assert settings.enable_batching is False
    assert settings.metrics_path == "/metrics"


def test_space_separated_values_parse_like_equals() -> None:
    spaced = build("--port", "9000", "--model_name", "x", "--model_base_path", "/m/x",
                   "--rest_api_timeout_in_ms", "1500", "--host", "127.0.0.1")
    assert spaced == build("--port=9000", "--model_name=x", "--model_base_path=/m/x",
                           "--rest_api_timeout_in_ms=1500", "--host=127.0.0.1")
    assert spaced.rest_api_timeout_in_ms == 1500 and spaced.host == "127.0.0.1"


def test_model_name_defaults_and_relative_base_path_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (model,) = build("--model_base_path=models/m").models
    assert model.name == "default"
    assert model.base_path == str(tmp_path / "models" / "m")


def test_url_base_path_is_kept() -> None:
    (model,) = build("--model_base_path=gs://bucket/m").models
    assert model.base_path == "gs://bucket/m"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--enable_batching"], True),
        (["--enable_batching=true"], True),
        (["--enable_batching=false"], False),
        (["--enable_batching", "true"], True),
        (["--enable_batching", "--port=1234"], True),
        ([], False),
    ],
)
def test_boolean_flag_syntax(flags: list[str], expected: bool) -> None:
    assert build("--model_base_path=/m", *flags).enable_batching is expected


def test_gateway_knobs_and_poll_wait() -> None:
    settings = build("--model_base_path=/m", "--max_request_bytes=1024",
                     "--max_rows_per_request=10", "--drain_timeout_seconds=2.5",
                     "--model_config_file_poll_wait_seconds=60")
    assert (settings.max_request_bytes, settings.max_rows_per_request) == (1024, 10)
    assert settings.drain_timeout_seconds == 2.5
    assert settings.model_config_file_poll_wait_seconds == 60
    assert build("--model_base_path=/m").tf2_session is True
    assert build("--model_base_path=/m", "--tf2_session=false").tf2_session is False


def test_explicit_flags_win_over_tfgw_environment() -> None:
    env = {"TFGW_PORT": "9000", "TFGW_MAX_ROWS_PER_REQUEST": "7", "TFGW_HOST": "127.0.0.1"}
    settings = build("--port=8600", "--model_base_path=/m", env=env)
    assert settings.port == 8600  # flag
    assert settings.max_rows_per_request == 7 and settings.host == "127.0.0.1"  # env
    assert settings.rest_api_port == 8501  # default


def test_process_environment_is_used_only_without_explicit_environ(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TFGW_DRAIN_TIMEOUT_SECONDS", "5")
    assert build_settings(["--model_base_path=/m"]).drain_timeout_seconds == 5.0
    assert build_settings(["--model_base_path=/m"], {}).drain_timeout_seconds == 30.0


def test_bad_environment_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="max_rows_per_request"):
        build("--model_base_path=/m", env={"TFGW_MAX_ROWS_PER_REQUEST": "many"})


def test_config_file_wins_over_model_base_path_as_in_tf_serving(tmp_path: Path) -> None:
    config = model_config(tmp_path, 'name: "a", base_path: "/models/a"')
    settings = build("--model_name=m", "--model_base_path=/m", f"--model_config_file={config}")
    assert [m.name for m in settings.models] == ["a"]


def test_neither_model_flag_is_refused() -> None:
    with pytest.raises(ConfigError, match="--model_base_path.*--model_config_file"):
        build("--port=8500")


def test_empty_model_flags_count_as_unset() -> None:
    with pytest.raises(ConfigError, match="no model to serve"):
        build("--model_base_path=", "--model_config_file=")


@pytest.mark.parametrize("flag", ["--no_such_flag=1", "--model_base=/m", "stray"])
def test_unknown_or_abbreviated_flag_is_a_usage_error(flag: str) -> None:
    with pytest.raises(UsageError):
        build("--model_base_path=/m", flag)


def test_bad_flag_values() -> None:
    with pytest.raises(UsageError, match="--port"):
        build("--model_base_path=/m", "--port=abc")
    with pytest.raises(UsageError, match="--enable_batching"):
        build("--model_base_path=/m", "--enable_batching=maybe")
    with pytest.raises(ConfigError, match="port"):
        build("--model_base_path=/m", "--port=70000")
    with pytest.raises(ConfigError, match="must differ"):
        build("--model_base_path=/m", "--port=8500", "--rest_api_port=8500")


def test_ignored_tf_serving_flags_warn_once_each(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="serving.cli")
    settings = build(
        "--model_base_path=/m",
        "--tensorflow_session_config_file=/s.config",
        "--num_load_threads=2",
        "--grpc_channel_arguments", "grpc.max_connection_age_ms=2000",
        "--enable_model_warmup", "--enable_model_warmup",
        "--allow_version_labels_for_unavailable_models=true",
    )
    assert settings.models[0].base_path == "/m"  # the space-separated value was not a positional
    messages = [record.getMessage() for record in caplog.records]
    warned = [message for message in messages if "ignoring TF Serving flag" in message]
    for flag in ("tensorflow_session_config_file", "num_load_threads",
                 "grpc_channel_arguments", "enable_model_warmup",
                 "allow_version_labels_for_unavailable_models"):
        assert sum(f"--{flag}=" in message for message in warned) == 1, flag
    assert len(warned) == 5


def test_tls_cors_and_reload_flags() -> None:
    defaults = build("--model_base_path=/m")
    assert defaults.ssl_config is None and defaults.rest_api_ssl is False
    assert defaults.rest_api_enable_cors_support is False
    assert defaults.enable_reload_config_api is True and defaults.model_roots == ()
    set_ = build("--model_base_path=/m", "--rest_api_enable_cors_support",
                 "--enable_reload_config_api=false", "--model_roots=/models, gs://b/models")
    assert set_.rest_api_enable_cors_support is True and set_.enable_reload_config_api is False
    assert set_.model_roots == ("/models", "gs://b/models")
    from_env = build("--model_base_path=/m", env={
        "TFGW_MODEL_ROOTS": "/a,/b", "TFGW_ENABLE_RELOAD_CONFIG_API": "false",
        "TFGW_REST_API_ENABLE_CORS_SUPPORT": "true"})
    assert from_env.model_roots == ("/a", "/b") and from_env.enable_reload_config_api is False
    assert from_env.rest_api_enable_cors_support is True
    with pytest.raises(ConfigError, match="--model_roots: 'gs://b/..' has a '.' or '..' segment"):
        build("--model_base_path=/m", "--model_roots=gs://b/..")
    with pytest.raises(ConfigError, match="SSL config file '/no/ssl.config': cannot read it"):
        build("--model_base_path=/m", "--ssl_config_file=/no/ssl.config")


def test_prediction_store_flags_and_environment() -> None:
    defaults = build("--model_base_path=/m")
    assert defaults.prediction_store is None and defaults.prediction_key_field is None
    assert defaults.prediction_store_timeout_ms == 100.0
    flags = build("--model_base_path=/m", "--prediction_store=redis://:pw@10.0.0.3:6379/2",
                  "--prediction_key_field=user_id", "--prediction_store_timeout_ms=25")
    assert flags.prediction_store is not None
    assert flags.prediction_store.get_secret_value() == "redis://:pw@10.0.0.3:6379/2"
    assert flags.prediction_key_field == "user_id" and flags.prediction_store_timeout_ms == 25.0
    assert "pw" not in repr(flags)
    from_env = build("--model_base_path=/m", env={
        "TFGW_PREDICTION_STORE": "sqlite:///var/lib/predictions.db", "TFGW_PREDICTION_KEY_FIELD": "k"})
    assert from_env.prediction_store is not None and from_env.prediction_key_field == "k"
    assert from_env.prediction_store.get_secret_value() == "sqlite:///var/lib/predictions.db"
    assert build("--model_base_path=/m", "--prediction_store=", "--prediction_key_field=").prediction_store is None


@pytest.mark.parametrize(("argv", "env", "problem"), [
    (["--prediction_store=redis://user:hunter2@host:99999/0", "--prediction_key_field=id"], {},
     "prediction_store: .*'redis://user:\\*\\*\\*@host:99999/0': the port must be a number"),
    (["--prediction_key_field=id"], {"TFGW_PREDICTION_STORE": "sqlite://relative.db"},
     "a sqlite URL needs an absolute file path"),
    (["--prediction_store=postgres://h/db", "--prediction_key_field=id"], {}, "unknown scheme 'postgres'"),
    (["--prediction_store=sqlite:///p.db"], {}, "prediction_store needs prediction_key_field"),
    (["--prediction_key_field=id"], {}, "prediction_key_field is set but prediction_store is not"),
    (["--prediction_store=sqlite:///p.db", "--prediction_key_field=id", "--prediction_store_timeout_ms=0"], {},
     "prediction_store_timeout_ms"),
])
def test_a_bad_prediction_store_is_refused(argv: list[str], env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as refused:
        build("--model_base_path=/m", *argv, env=env)
    assert "hunter2" not in str(refused.value)


def test_parallelism_flags_are_applied_as_tf_serving_applies_them(caplog: pytest.LogCaptureFixture) -> None:
    assert build("--model_base_path=/m").op_parallelism == (0, 0)  # TensorFlow's defaults
    assert build("--model_base_path=/m", "--tensorflow_session_parallelism=3").op_parallelism == (3, 3)
    assert build("--model_base_path=/m", "--tensorflow_intra_op_parallelism=1").op_parallelism == (1, 0)
    assert build("--model_base_path=/m", "--tensorflow_intra_op_parallelism=1",
                 "--tensorflow_inter_op_parallelism=2").op_parallelism == (1, 2)
    assert build("--model_base_path=/m", env={"TFGW_TENSORFLOW_INTRA_OP_PARALLELISM": "1"}).op_parallelism == (1, 0)
    assert not caplog.records
    caplog.set_level(logging.WARNING, logger="serving.cli")
    assert build("--model_base_path=/m", "--tensorflow_session_parallelism=3",
                 "--tensorflow_inter_op_parallelism=2").op_parallelism == (0, 2)
    assert "--tensorflow_session_parallelism is ignored" in caplog.text
    with pytest.raises(ConfigError, match="not all three"):
        build("--model_base_path=/m", "--tensorflow_session_parallelism=3",
              "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=2")
    with pytest.raises(ConfigError, match="tensorflow_intra_op_parallelism"):
        build("--model_base_path=/m", "--tensorflow_intra_op_parallelism=-1")
    assert {"tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism",
            "tensorflow_session_parallelism"}.isdisjoint(IGNORED_TFS_FLAGS)


def test_file_system_poll_wait_seconds_is_a_setting() -> None:
    assert build("--model_base_path=/m", "--file_system_poll_wait_seconds=5").file_system_poll_wait_seconds == 5


def test_load_retry_flags_are_settings_with_tf_servings_defaults(caplog: pytest.LogCaptureFixture) -> None:
    defaults = build("--model_base_path=/m")
    assert (defaults.max_num_load_retries, defaults.load_retry_interval_micros) == (5, 60_000_000)
    caplog.set_level(logging.WARNING, logger="serving.cli")
    settings = build("--model_base_path=/m", "--max_num_load_retries=2",
                     "--load_retry_interval_micros=-1")
    assert (settings.max_num_load_retries, settings.load_retry_interval_micros) == (2, -1)
    assert not [r for r in caplog.records if "ignoring" in r.getMessage()]
    assert {"max_num_load_retries", "load_retry_interval_micros"}.isdisjoint(IGNORED_TFS_FLAGS)
    with pytest.raises(ConfigError, match="max_num_load_retries"):
        build("--model_base_path=/m", "--max_num_load_retries=-1")


def test_every_listed_ignored_flag_is_accepted() -> None:
    build("--model_base_path=/m", *(f"--{name}=1" for name in IGNORED_TFS_FLAGS))


@pytest.mark.parametrize(
    ("flag", "refused"),
    [
        ("--use_alts_credentials", True),
        ("--use_alts_credentials=false", False),
        ("--grpc_socket_path=/tmp/tfs.sock", True),
        ("--platform_config_file=/p.config", True),
        ("--saved_model_tags=serve", False),
        ("--saved_model_tags=serve,tpu", True),
        ("--saved_model_tags=ser", True),
    ],
)
def test_unsafe_tf_serving_flags_are_refused_when_set(flag: str, refused: bool) -> None:
    if refused:
        with pytest.raises(ConfigError, match="not supported"):
            build("--model_base_path=/m", flag)
    else:
        build("--model_base_path=/m", flag)


# --- --model_config_file -------------------------------------------------------------

def test_tf_serving_good_model_config(tfserving_dir: Path, tfserving_files: Path,
                                      tmp_path: Path) -> None:
    two = tfserving_dir / "saved_model_half_plus_two_cpu"
    three = tfserving_dir / "saved_model_half_plus_three"
    text = (tfserving_files / "good_model_config.txt").read_text()
    text = text.replace("${TEST_HALF_PLUS_TWO_DIR}", str(two))
    text = text.replace("${TEST_HALF_PLUS_THREE_DIR}", str(three))
    config = write(tmp_path / "good_model_config.txt", text)

    settings = build(f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=30")

    assert settings.models == (
        ModelConfig(name="half_plus_two", base_path=str(two)),
        ModelConfig(name="half_plus_three", base_path=str(three)),
    )
    assert all(Path(m.base_path, "00000123", "saved_model.pb").is_file() for m in settings.models)
    assert settings.model_config_file == str(config)
    assert settings.model_config_file_poll_wait_seconds == 30


def test_tf_serving_bad_model_config_is_refused(tfserving_files: Path) -> None:
    bad = tfserving_files / "bad_model_config.txt"
    with pytest.raises(ConfigError) as caught:
        build(f"--model_config_file={bad}")
    message = str(caught.value)
    assert str(bad) in message
    assert "ModelServerConfig" in message and "improperly" in message  # protobuf's own words


def test_relative_base_path_in_config_resolves_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    config = model_config(tmp_path / "conf", 'name: "m", base_path: "models/m"')
    monkeypatch.chdir(tmp_path)
    settings = build("--model_config_file=conf/models.config")
    assert settings.models[0].base_path == str(tmp_path / "models" / "m")
    assert settings.model_config_file == str(config)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("", VersionPolicy()),
        ("model_version_policy { latest { } }", VersionPolicy(kind="latest", num_versions=1)),
        ("model_version_policy { latest { num_versions: 2 } }",
         VersionPolicy(kind="latest", num_versions=2)),
        ("model_version_policy { all { } }", VersionPolicy(kind="all")),
        ("model_version_policy { specific { versions: 124 versions: 123 } }",
         VersionPolicy(kind="specific", versions=(123, 124))),
        ("model_version_policy { specific { versions: [123] } }",
         VersionPolicy(kind="specific", versions=(123,))),
    ],
)
def test_version_policies(tmp_path: Path, policy: str, expected: VersionPolicy) -> None:
    config = model_config(tmp_path, f'name: "m" base_path: "/m" {policy}')
    assert build(f"--model_config_file={config}").models[0].version_policy == expected


def test_version_labels(tfserving_dir: Path, tmp_path: Path) -> None:
    config = model_config(
        tmp_path,
        f'name: "hpt" base_path: "{tfserving_dir / "saved_model_half_plus_two_2_versions"}" '
        "model_platform: 'tensorflow' "
        "model_version_policy { specific { versions: 123 versions: 124 } } "
        'version_labels { key: "stable" value: 123 } '
        'version_labels { key: "canary" value: 124 }',
    )
    (model,) = build(f"--model_config_file={config}").models
    assert model.version_labels == {"stable": 123, "canary": 124}
    assert model.version_policy == VersionPolicy(kind="specific", versions=(123, 124))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "lists no models"),
        ("model_config_list { }", "lists no models"),
        ('custom_model_config { type_url: "x/y" }', "custom_model_config is not supported"),
        ('model_config_list { config { name: "m" base_path: "/a" } '
         'config { name: "m" base_path: "/b" } }', "'m' is used more than once"),
        ('model_config_list { config { name: "m" base_path: "/a" model_platform: "pytorch" } }',
         "'pytorch' is not supported"),
        ('model_config_list { config { name: "m" base_path: "/a" model_type: OTHER } }',
         "not supported"),
        ('model_config_list { config { name: "m" } }', "base_path is empty"),
        ('model_config_list { config { base_path: "/a" } }', "name is empty"),
        ('model_config_list { config { name: "m" base_path: "/a" '
         "model_version_policy { specific { } } } }", "lists no versions"),
        ('model_config_list { config { name: "m" base_path: "/a" '
         'version_labels { key: "x" value: "one" } } }', "not a valid"),
        ('model_config_list { config { name: "m" base_path: "/a" colour: "red" } }',
         'no field named "colour"'),
    ],
)
def test_bad_model_configs(tmp_path: Path, text: str, problem: str) -> None:
    config = write(tmp_path / "models.config", text)
    with pytest.raises(ConfigError) as caught:
        build(f"--model_config_file={config}")
    assert problem in str(caught.value)
    assert str(config) in str(caught.value)


def test_missing_model_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.config"
    with pytest.raises(ConfigError, match="cannot read it: No such file"):
        build(f"--model_config_file={missing}")


# --- --batching_parameters_file ------------------------------------------------------

def test_tf_serving_batching_config(tfserving_files: Path) -> None:
    settings = build("--model_base_path=/m", "--enable_batching",
                     f"--batching_parameters_file={tfserving_files / 'batching_config.txt'}")
    batching = settings.batching
    assert (batching.max_batch_size, batching.batch_timeout_micros,
            batching.max_enqueued_batches, batching.num_batch_threads) == (128, 0, 1000000, 8)
    assert settings.enable_batching is True


def test_batching_unset_fields_take_defaults(tmp_path: Path) -> None:
    params = write(tmp_path / "batching.config",
                   'max_batch_size { value: 32 }\nthread_pool_name { value: "pool" }\n'
                   "allowed_batch_sizes: 8\nallowed_batch_sizes: 16\nallowed_batch_sizes: 32\n"
                   "pad_variable_length_inputs: true\n")
    batching = build("--model_base_path=/m", "--enable_batching",
                     f"--batching_parameters_file={params}").batching
    defaults = BatchingConfig()
    assert batching == BatchingConfig(
        max_batch_size=32,
        batch_timeout_micros=defaults.batch_timeout_micros,
        max_enqueued_batches=defaults.max_enqueued_batches,
        num_batch_threads=defaults.num_batch_threads,
        thread_pool_name="pool",
        allowed_batch_sizes=(8, 16, 32),
        pad_variable_length_inputs=True,
    )


def test_no_batching_file_keeps_default_batching() -> None:
    assert build("--model_base_path=/m", "--enable_batching").batching == BatchingConfig()


EVERY_BATCHING_FIELD = """
max_batch_size { value: 64 }
batch_timeout_micros { value: 500 }
max_enqueued_batches { value: 10 }
num_batch_threads { value: 2 }
thread_pool_name { value: "my_pool" }
enable_large_batch_splitting { value: true }
max_execution_batch_size { value: 16 }
allowed_batch_sizes: 4
allowed_batch_sizes: 8
allowed_batch_sizes: 16
pad_variable_length_inputs: true
"""


def test_batching_file_with_every_field_of_tf_serving_parses(tmp_path: Path) -> None:
    """Every field of TF Serving's BatchingParameters is accepted, and each lands in Settings."""
    from google.protobuf import text_format

    from serving.tfs_config import BatchingParameters

    params = write(tmp_path / "batching.config", EVERY_BATCHING_FIELD)
    parsed = text_format.Parse(EVERY_BATCHING_FIELD, BatchingParameters())
    assert {f.name for f, _ in parsed.ListFields()} == {
        f.name for f in BatchingParameters.DESCRIPTOR.fields}  # the file sets every field
    batching = build("--model_base_path=/m", "--enable_batching",
                     f"--batching_parameters_file={params}").batching
    assert batching == BatchingConfig(
        max_batch_size=64, batch_timeout_micros=500, max_enqueued_batches=10,
        num_batch_threads=2, thread_pool_name="my_pool", enable_large_batch_splitting=True,
        max_execution_batch_size=16, allowed_batch_sizes=(4, 8, 16),
        pad_variable_length_inputs=True)
    assert batching.execution_batch_size == 16  # each model call
    assert batching.max_request_rows == 64  # each request, as TF Serving's input_batch_size_limit


def test_large_batch_splitting_without_max_execution_batch_size_runs_max_batch_size(
        tmp_path: Path) -> None:
    params = write(tmp_path / "batching.config",
                   "max_batch_size { value: 32 } enable_large_batch_splitting { value: true }")
    batching = build("--model_base_path=/m", "--enable_batching",
                     f"--batching_parameters_file={params}").batching
    assert (batching.execution_batch_size, batching.max_request_rows) == (32, 32)
    assert batching.thread_pool_name == "batch_threads"  # TF Serving's default with a file


def test_batching_fields_that_do_nothing_here_log_why(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    params = write(tmp_path / "batching.config",
                   "max_batch_size { value: 32 } max_execution_batch_size { value: 8 }\n"
                   "pad_variable_length_inputs: true\n")
    with caplog.at_level(logging.WARNING, logger="serving.tfs_config"):
        batching = build("--model_base_path=/m", "--enable_batching",
                         f"--batching_parameters_file={params}").batching
    assert batching.execution_batch_size == 32  # ignored without splitting, as in TF Serving
    messages = [r.getMessage() for r in caplog.records]
    assert any("pad_variable_length_inputs" in m and "separate model calls" in m
               and str(params) in m for m in messages), messages
    assert any("max_execution_batch_size is ignored without enable_large_batch_splitting" in m
               for m in messages), messages


def test_batching_fields_the_gateway_acts_on_log_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    params = write(tmp_path / "batching.config", EVERY_BATCHING_FIELD.replace(
        "pad_variable_length_inputs: true", ""))
    with caplog.at_level(logging.WARNING, logger="serving.tfs_config"):
        build("--model_base_path=/m", "--enable_batching", f"--batching_parameters_file={params}")
    assert [r.getMessage() for r in caplog.records] == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("max_batch_size { value: 32 } allowed_batch_sizes: [8, 16]", "must equal max_batch_size"),
        ("max_batch_size { value: 32 } allowed_batch_sizes: [16, 8, 32]", "strictly increasing"),
        ("max_batch_size { value: 0 }", "max_batch_size"),
        ("num_batch_threads { value: -1 }", "num_batch_threads"),
        ("max_batch_size: 32", "not a valid tensorflow.serving.BatchingParameters"),
        ("max_batch_size { value: 8 } enable_large_batch_splitting { value: true } "
         "max_execution_batch_size { value: 16 }", "must not exceed max_batch_size"),
        ("max_batch_size { value: 32 } enable_large_batch_splitting { value: true } "
         "max_execution_batch_size { value: 16 } allowed_batch_sizes: [8, 32]",
         "must equal max_execution_batch_size (16)"),
    ],
)
def test_bad_batching_parameters(tmp_path: Path, text: str, problem: str) -> None:
    params = write(tmp_path / "batching.config", text)
    with pytest.raises(ConfigError) as caught:
        build("--model_base_path=/m", "--enable_batching", f"--batching_parameters_file={params}")
    assert problem in str(caught.value)
    assert str(params) in str(caught.value)


def test_batching_file_without_enable_batching_is_refused(tfserving_files: Path) -> None:
    with pytest.raises(ConfigError, match="--enable_batching"):
        build("--model_base_path=/m",
              f"--batching_parameters_file={tfserving_files / 'batching_config.txt'}")


# --- --monitoring_config_file --------------------------------------------------------

def test_tf_serving_monitoring_config(tfserving_files: Path) -> None:
    settings = build("--model_base_path=/m",
                     f"--monitoring_config_file={tfserving_files / 'monitoring_config.txt'}")
    assert settings.metrics_path == "/monitoring/prometheus/metrics"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('prometheus_config { enable: true, path: "/m" }', "/m"),
        ("prometheus_config { enable: true }", TFS_PROMETHEUS_PATH),
        ('prometheus_config { enable: false, path: "/m" }', None),
        ("", None),
    ],
)
def test_monitoring_config(tmp_path: Path, text: str, expected: str | None) -> None:
    config = write(tmp_path / "monitoring.config", text)
    assert build("--model_base_path=/m",
                 f"--monitoring_config_file={config}").metrics_path == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('prometheus_config { enable: true, path: "metrics" }', "must start with '/'"),
        ("prometheus_config { enable: maybe }", "not a valid tensorflow.serving.MonitoringConfig"),
    ],
)
def test_bad_monitoring_config(tmp_path: Path, text: str, problem: str) -> None:
    config = write(tmp_path / "monitoring.config", text)
    with pytest.raises(ConfigError, match=problem):
        build("--model_base_path=/m", f"--monitoring_config_file={config}")


# --- main() and the process ------------------------------------------------------------

def test_main_runs_the_server_with_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[Settings] = []
    fake_server = types.ModuleType("serving.server")
    fake_server.run = received.append  # type: ignore[attr-defined]
    fake_server.StartupError = type("StartupError", (Exception,), {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "serving.server", fake_server)
    monkeypatch.delenv("TFGW_PORT", raising=False)
    main(["--model_name=x", "--model_base_path=/m/x", "--port=8601"])
    assert [s.port for s in received] == [8601]
    assert received[0].models == (ModelConfig(name="x", base_path="/m/x"),)


def test_help_does_not_import_tensorflow() -> None:
    probe = (
        "import sys\n"
        "from serving.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "heavy = sorted(m for m in ('tensorflow', 'tensorflow_serving') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFGW_")}
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--model_config_file" in done.stdout
    assert "HEAVY []" in done.stdout


def test_process_refuses_tf_serving_bad_model_config(tfserving_files: Path) -> None:
    bad = tfserving_files / "bad_model_config.txt"
    done = gateway(f"--model_config_file={bad}")
    assert done.returncode == 1
    assert done.stderr.startswith("error: ")
    assert str(bad) in done.stderr and "improperly" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--port=8500"], 1, "error: no model to serve"),
        (["--model_base_path=/m", "--model_config_file=/c"], 1, "/c"),
        (["--model_config_file=/no/such/file"], 1, "/no/such/file"),
        (["--model_base_path=/m", "--no_such_flag"], 2, "error: unrecognized arguments"),
        (["--model_base_path=/m", "--prediction_store=redis://u:hunter2@h:6379/x", "--prediction_key_field=id"],
         1, "error: invalid settings (flags or TFGW_* variables): prediction_store: "),
    ],
)
def test_process_failure_exits(argv: list[str], code: int, message: str) -> None:
    done = gateway(*argv)
    assert done.returncode == code
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert "hunter2" not in done.stderr


def test_own_messages_match_tf_serving_protos() -> None:
    """Field names and numbers as in TF Serving's session_bundle_config/monitoring_config.proto."""
    from serving.tfs_config import BatchingParameters, MonitoringConfig

    def fields(message_class: type) -> list[tuple[str, int]]:
        return [(f.name, f.number) for f in message_class.DESCRIPTOR.fields]

    assert BatchingParameters.DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"
    assert fields(BatchingParameters) == [
        ("max_batch_size", 1), ("batch_timeout_micros", 2), ("max_enqueued_batches", 3),
        ("num_batch_threads", 4), ("thread_pool_name", 5), ("enable_large_batch_splitting", 8),
        ("max_execution_batch_size", 9), ("allowed_batch_sizes", 6),
        ("pad_variable_length_inputs", 7),
    ]
    assert fields(MonitoringConfig) == [("prometheus_config", 1)]
    prometheus = MonitoringConfig.DESCRIPTOR.fields_by_name["prometheus_config"].message_type
    assert prometheus.full_name == "tensorflow.serving.PrometheusConfig"
    assert [(f.name, f.number) for f in prometheus.fields] == [("enable", 1), ("path", 2)]


def test_grpc_server_and_compression_flags() -> None:
    defaults = build("--model_base_path=/m")
    assert defaults.grpc_server == "loop" and defaults.grpc_compression == "none"
    set_ = build("--model_base_path=/m", "--grpc_server=aio", "--grpc_compression=gzip")
    assert set_.grpc_server == "aio" and set_.grpc_compression == "gzip"
    from_env = build("--model_base_path=/m", env={"TFGW_GRPC_SERVER": "aio", "TFGW_GRPC_COMPRESSION": "deflate"})
    assert from_env.grpc_server == "aio" and from_env.grpc_compression == "deflate"
    for flag in ("--grpc_server=threads", "--grpc_compression=zstd"):
        with pytest.raises(ConfigError, match=flag.split("=")[0][2:]):
            build("--model_base_path=/m", flag)
