"""The gateway image's entry point behaves as tensorflow/serving's
(``tensorflow_serving/tools/docker/Dockerfile``: ``ENV MODEL_BASE_PATH=/models``, ``ENV
MODEL_NAME=model``, ``tensorflow_model_server --port=8500 --rest_api_port=8501
--model_name=${MODEL_NAME} --model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME} "$@"``): the
script itself runs, with a stand-in python, and its command line is read back by the
gateway's own flag parser."""
from __future__ import annotations

import pytest

from serving.cli import build_settings
from serving.settings import ModelConfig
from tests.deploy.entrypoint import command_line

GATEWAY = ["python", "-m", "serving"]


@pytest.fixture
def run(tmp_path):
    def run(env: dict[str, str], *args: str) -> list[str]:
        return command_line(tmp_path, env, *args)

    return run


def test_defaults_are_tf_servings(run):
    assert run({}) == [*GATEWAY, "--port=8500", "--rest_api_port=8501", "--model_name=model",
                       "--model_base_path=/models/model"]


def test_model_name_names_the_model_and_its_folder_under_models(run):
    words = run({"MODEL_NAME": "natality"})
    assert words[3:] == ["--port=8500", "--rest_api_port=8501", "--model_name=natality",
                         "--model_base_path=/models/natality"]
    settings = build_settings(words[3:], {})
    assert settings.models == (ModelConfig(name="natality", base_path="/models/natality"),)
    assert (settings.port, settings.rest_api_port) == (8500, 8501)


def test_model_base_path_moves_the_folder_of_models(run):
    words = run({"MODEL_NAME": "natality", "MODEL_BASE_PATH": "gs://bucket/models"})
    assert "--model_base_path=gs://bucket/models/natality" in words
    assert build_settings(words[3:], {}).models[0].base_path == "gs://bucket/models/natality"


@pytest.mark.parametrize(("env", "grpc", "rest"), [
    ({"PORT": "8080"}, 8500, 8080),  # PORT is the HTTP port, as Cloud Run and Knative set it
    ({"REST_API_PORT": "9001"}, 8500, 9001),
    ({"REST_API_PORT": "9001", "PORT": "8080"}, 8500, 9001),  # the gateway's own name wins
    ({"GRPC_PORT": "9000", "PORT": "8080"}, 9000, 8080),
])
def test_port_variables_move_the_ports(run, env, grpc, rest):
    settings = build_settings(run(env)[3:], {})
    assert (settings.port, settings.rest_api_port) == (grpc, rest)


def test_extra_flags_are_appended_and_win(run):
    words = run({"MODEL_NAME": "m"}, "--enable_batching", "--rest_api_port=9100", "--model_name=other")
    assert words[-3:] == ["--enable_batching", "--rest_api_port=9100", "--model_name=other"]
    settings = build_settings(words[3:], {})
    assert settings.enable_batching and settings.rest_api_port == 9100
    assert settings.models == (ModelConfig(name="other", base_path="/models/m"),)  # the last flag counts


def test_a_model_config_file_wins_over_the_name_and_base_path(run, tmp_path, caplog):
    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "a" base_path: "/srv/a" '
                      'model_platform: "tensorflow" } }\n')
    words = run({"MODEL_NAME": "ignored"}, f"--model_config_file={config}")
    assert words[-1] == f"--model_config_file={config}"
    settings = build_settings(words[3:], {})
    assert [(m.name, m.base_path) for m in settings.models] == [("a", "/srv/a")]
    assert "ignored with --model_config_file (as in TF Serving)" in caplog.text


def test_arguments_with_spaces_reach_the_gateway_whole(run):
    assert run({"MODEL_BASE_PATH": "/my models"}, "--host", "::")[-3:] == [
        "--model_base_path=/my models/model", "--host", "::"]
