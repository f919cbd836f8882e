"""The package map of the README, enforced: who may import whom (read from the source,
function-level imports included), and a base install that never loads the pipelines' or
load tests' libraries."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PIPELINE_AND_LOADTEST_LIBS = ("apache_beam", "pyarrow", "locust", "matplotlib", "gevent")
# Keras (inside TensorFlow) imports matplotlib.pyplot whenever it is installed, as it is in
# the test venv; the base install has none. So at run time only the others are checked.
LOADED_AT_RUN_TIME = tuple(lib for lib in PIPELINE_AND_LOADTEST_LIBS if lib != "matplotlib")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, wherever the import statement stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def graph(*packages: str) -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for package in packages for p in (REPO / package).rglob("*.py")}


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(modules: dict[str, set[str]], importer: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{module} imports {target}" for module, targets in modules.items() if under(module, *importer)
                  for target in targets if under(target, *forbidden))


OURS = ("batch", "streaming", "loadtests")
SERVING = graph("serving")
PIPELINES = graph("batch", "streaming")
LOADTESTS = graph("loadtests")


def test_serving_imports_no_pipeline_or_load_test_code():
    assert violations(SERVING, ("serving",), ("batch", "streaming", "loadtests", "tests",
                                              *PIPELINE_AND_LOADTEST_LIBS)) == []


def test_the_runtime_sits_below_the_core_upstream_and_adapters():
    assert violations(SERVING, ("serving.runtime",), ("serving.core", "serving.upstream", "serving.rest",
                                                      "serving.grpc", "serving.server")) == []


def test_upstream_is_a_model_source_not_an_adapter():
    assert violations(SERVING, ("serving.upstream",), ("serving.core", "serving.rest", "serving.grpc")) == []


def test_adapters_talk_to_the_service_never_the_registry():
    assert violations(SERVING, ("serving.rest", "serving.grpc"), ("serving.core.registry",
                                                                  "serving.core.sources")) == []


def test_the_prediction_store_sits_below_the_core_and_adapters_never_use_it():
    assert violations(SERVING, ("serving.precomputed",), ("serving.core", "serving.rest", "serving.grpc",
                                                          "serving.server", "fastapi", "starlette", "grpc")) == []
    assert violations(SERVING, ("serving.rest", "serving.grpc"), ("serving.precomputed",)) == []


def test_no_transport_in_the_core():
    assert violations(SERVING, ("serving.core", "serving.batching", "serving.runtime", "serving.precomputed"),
                      ("fastapi", "starlette", "uvicorn", "serving.rest", "serving.grpc")) == []


def test_the_open_inference_protocol_types_need_no_tensorflow_or_transport():
    """``serving.v2`` is the protocol's rules for both adapters: no TensorFlow, web framework
    or gRPC in it (protobuf is allowed: its messages are data), and the layers below the
    adapters never reach up into it."""
    assert violations(SERVING, ("serving.v2",), ("tensorflow", "fastapi", "starlette", "uvicorn", "grpc",
                                                 "serving.rest", "serving.grpc", "serving.server")) == []
    assert violations(SERVING, ("serving.core", "serving.runtime", "serving.batching"), ("serving.v2",)) == []


def test_the_open_inference_protocol_types_load_no_tensorflow_or_transport():
    """The same at run time, through everything ``serving.v2`` imports."""
    modules = sorted(module_name(p) for p in (REPO / "serving" / "v2").rglob("*.py"))
    probe = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('tensorflow', 'fastapi', 'starlette', 'uvicorn', 'grpc')))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout[-2000:]


def test_chunk_decoding_is_beam_free_and_pipelines_share_one_handler():
    assert violations(PIPELINES, ("batch.chunks", "batch.columnar", "batch.records"), ("apache_beam",)) == []
    assert "batch.model_handler" in PIPELINES["streaming.pipeline"]
    assert not any(under(m, "streaming") for targets in PIPELINES.values() for m in targets
                   if not under(m, "streaming.pipeline"))


def test_load_test_support_sits_below_the_jobs():
    assert violations(LOADTESTS, ("loadtests.support",), ("loadtests.locust_scenarios", "loadtests.benchmarks",
                                                          "loadtests.baselines", "loadtests.publish")) == []


def test_the_locust_scenarios_need_no_benchmark():
    assert violations(LOADTESTS, ("loadtests.locust_scenarios",), ("loadtests.benchmarks", "loadtests.baselines",
                                                                   "loadtests.publish")) == []


@pytest.mark.parametrize("code", [
    "import serving.cli, serving.server, serving.upstream.source, serving.examples.build",
    "from serving.cli import main; import sys; sys.argv = ['serving', '--help']; main()",
])
@pytest.mark.slow
def test_the_gateway_loads_no_pipeline_or_load_test_library(code):
    probe = (f"import sys\ntry:\n    {code.replace(chr(10), chr(10) + '    ')}\nexcept SystemExit:\n    pass\n"
             f"print(sorted(m for m in sys.modules if m.split('.')[0] in {LOADED_AT_RUN_TIME + OURS!r}))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout[-2000:]


@pytest.mark.slow
def test_a_serving_gateway_process_loads_no_pipeline_or_load_test_library(models_dir, tmp_path):
    """``python -m serving`` started, ready, answering, then stopped: at exit it has loaded
    none of them (the process reports its own ``sys.modules``)."""
    import httpx

    from loadtests.support.processes import Server, free_port

    report = (f"import atexit, runpy, sys\n"
              f"atexit.register(lambda: print('LOADED', sorted({{m.split('.')[0] for m in sys.modules}}"
              f" & set({LOADED_AT_RUN_TIME + OURS!r})), flush=True))\n"
              f"runpy.run_module('serving', run_name='__main__')\n")
    port = free_port()
    argv = [sys.executable, "-c", report, f"--rest_api_port={port}", f"--port={free_port()}",
            "--model_name=natality", f"--model_base_path={models_dir / 'natality'}"]
    with Server("gateway", argv, tmp_path / "gateway.log", port, ready_timeout=120) as server:
        body = {"instances": [{"is_male": "True", "mother_age": 25.0, "plurality": "Single(1)",
                               "gestation_weeks": 39.0}]}
        assert httpx.post(server.url + "/v1/models/natality:predict", json=body, timeout=30).status_code == 200
    assert server.proc.returncode == 0, server.log_tail()
    loaded = [line for line in server.log_path.read_text().splitlines() if line.startswith("LOADED")]
    assert loaded == ["LOADED []"], server.log_tail()
