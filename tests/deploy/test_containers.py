"""The container builds agree with the project and the manifests (no Docker engine here, so
the Dockerfiles are read, not built): entry point, user, ports, pinned versions, build
context, and the Flex Template's parameters."""
from __future__ import annotations

import json
import re
import shlex
import tomllib

import pytest

from batch.run import JUDGED_AFTER_THE_RUN
from batch.run import parse as parse_batch_args
from tests.conftest import REPO
from tests.deploy.entrypoint import IMAGE_PATH, SCRIPT, command_line
from tests.deploy.loadtest import ENTRY_POINT as LOADTEST_ENTRY_POINT
from tests.deploy.manifests import DEPLOY, OVERLAYS, WITH_LOCUST, named, pod_spec
from tests.deploy.workloads import flags
from tests.lock import LOCK, PipInstall, pip_installs

CONTAINERS = DEPLOY / "containers"
DOCKERFILES = sorted(CONTAINERS.glob("*.Dockerfile"))


def instructions(dockerfile) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    lines = (line.strip() for line in text.splitlines())
    return [(word.upper(), rest.strip()) for word, _, rest in
            (line.partition(" ") for line in lines if line and not line.startswith("#"))]


def last(dockerfile, instruction: str) -> str:
    return [rest for word, rest in instructions(dockerfile) if word == instruction][-1]


def copied(dockerfile) -> list[tuple[str, str]]:
    """(source, destination) of each COPY from the build context (its --options left out)."""
    pairs = []
    for word, rest in instructions(dockerfile):
        words = [w for w in rest.split() if not w.startswith("--")]
        if word == "COPY" and not rest.startswith("--from"):
            pairs.extend((source, words[-1]) for source in words[:-1])
    return pairs


def _pins() -> dict[str, str]:
    """name -> version prefix of pyproject's `name==X.Y.*` dependencies, extras included."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    dependencies = [*project["dependencies"], *(d for extra in extras for d in extra)]
    return {m[1]: m[2] for d in dependencies if (m := re.match(r"([\w-]+)(?:\[.*\])?==([\d.]+)\.\*", d))}


def _make_serve() -> list[str]:
    """The words of `make serve`'s command, continuation lines joined."""
    makefile = re.sub(r"\\\n\s*", " ", (REPO / "Makefile").read_text())
    recipe = re.search(r"^serve:.*\n\t(.*)$", makefile, re.MULTILINE)[1]
    return shlex.split(recipe)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_runs_the_entry_point_and_flags_of_make_serve(rendered, overlay, tmp_path):
    """The image's entry point script runs `make serve`'s program; the pods run that program
    with their own flags (the script's TF Serving defaults would only be overridden)."""
    words = _make_serve()
    module = words[words.index("-m"):words.index("-m") + 2]
    dockerfile = CONTAINERS / "gateway.Dockerfile"
    assert json.loads(last(dockerfile, "ENTRYPOINT")) == [IMAGE_PATH]
    assert (str(SCRIPT.relative_to(REPO)), IMAGE_PATH) in copied(dockerfile)
    program = command_line(tmp_path, {})[:3]
    assert program == ["python", *module]
    container = pod_spec(named(rendered[overlay], "Deployment", "gateway"))["containers"][0]
    assert container["command"] == program
    make_flags = {w[2:].partition("=")[0] for w in words if w.startswith("--")}
    assert make_flags <= set(flags(container))


def test_gateway_image_user_and_ports_are_the_pods(rendered):
    dockerfile = CONTAINERS / "gateway.Dockerfile"
    deployment = named(rendered["prod"], "Deployment", "gateway")
    uid = int(last(dockerfile, "USER").split(":")[0])
    assert uid != 0 and uid == pod_spec(deployment)["securityContext"]["runAsUser"]
    exposed = {int(p) for p in last(dockerfile, "EXPOSE").split()}
    assert exposed == {p["containerPort"] for p in pod_spec(deployment)["containers"][0]["ports"]}


def test_load_test_pods_run_the_loadtest_image_as_its_user(rendered):
    """The locust-workers component runs the load-test image's entry point, as its user."""
    dockerfile = CONTAINERS / "loadtest.Dockerfile"
    entry_point = json.loads(last(dockerfile, "ENTRYPOINT"))
    uid = int(last(dockerfile, "USER").split(":")[0])
    for kind, name in (("Job", "locust-master"), ("Deployment", "locust-worker")):
        spec = pod_spec(named(rendered[WITH_LOCUST], kind, name))
        (container,) = spec["containers"]
        assert container["command"] == entry_point == LOADTEST_ENTRY_POINT
        assert container["image"].rsplit(":", 1)[0].endswith("/loadtest")
        assert uid != 0 and spec["securityContext"]["runAsUser"] == uid


def test_tf_serving_is_the_release_of_tensorflow_serving_api(rendered):
    container = pod_spec(named(rendered["prod"], "Deployment", "tf-serving"))["containers"][0]
    image, _, tag = container["image"].partition(":")
    assert image == "tensorflow/serving"
    assert tag.startswith(_pins()["tensorflow-serving-api"] + ".")


def test_beam_image_matches_pyproject_and_the_flex_launcher():
    dockerfile = CONTAINERS / "beam-worker.Dockerfile"
    launcher, sdk = [rest.split()[0] for word, rest in instructions(dockerfile) if word == "FROM"]
    python, beam = re.fullmatch(r"apache/beam_python(\d+\.\d+)_sdk:([\d.]+)", sdk).groups()
    assert beam.startswith(_pins()["apache-beam"] + ".")
    assert f"/python{python.replace('.', '')}-template-launcher-base:" in launcher
    workdir = last(dockerfile, "WORKDIR")
    assert last(dockerfile, "ENV") == f"FLEX_TEMPLATE_PYTHON_PY_FILE={workdir}/batch/run.py"
    assert ("COPY", "batch ./batch") in instructions(dockerfile)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_build_context_holds_what_each_dockerfile_copies(dockerfile):
    lines = dockerfile.with_name(dockerfile.name + ".dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"  # everything out, then what the build copies back in
    for source, _ in copied(dockerfile):
        assert (REPO / source).exists(), (
            f"{dockerfile.name}: COPY {source}: not in the repo (models/: `make models`)")
        assert f"!{source.rstrip('/')}/" in ignore or f"!{source}" in ignore, (
            f"{dockerfile.name}: COPY {source} is excluded by its .dockerignore")


def test_flex_template_parameters_are_batch_run_options():
    metadata = json.loads((CONTAINERS / "flex-template-metadata.json").read_text())
    parameters = {p["name"]: p for p in metadata["parameters"]}
    args, passed_to_beam = parse_batch_args(["--input=i", "--output=o", "--model_base_path=m"])
    assert passed_to_beam == []
    # every option but those that need the job to end here, and nothing batch/run.py lacks
    assert set(parameters) == set(vars(args)) - JUDGED_AFTER_THE_RUN
    required = {n for n, p in parameters.items() if not p.get("isOptional", False)}
    assert required == {"input", "output"}
    for missing in required:
        with pytest.raises(SystemExit):
            parse_batch_args([f"--{n}=x" for n in required - {missing}] + ["--model_base_path=m"])
    for parameter in parameters.values():
        assert {"name", "label", "helpText"} <= set(parameter)
        assert all(re.compile(r) for r in parameter.get("regexes", []))


@pytest.mark.parametrize("dockerfile, extras, packages", [
    ("gateway.Dockerfile", "", {"serving", str(SCRIPT.relative_to(REPO))}),
    ("beam-worker.Dockerfile", "[batch]", {"serving", "batch", "streaming"}),
    ("loadtest.Dockerfile", "[loadtest]", {"serving", "loadtests"}),
])
def test_each_image_installs_only_what_it_runs_at_the_locked_versions(dockerfile, extras, packages):
    """Its own extra, with the lock CI installs from (`make lock`) as pip constraints."""
    path = CONTAINERS / dockerfile
    runs = "\n".join(rest for word, rest in instructions(path) if word == "RUN")
    assert pip_installs(runs) == [PipInstall((f".{extras}",), (LOCK.name,))], dockerfile
    assert {source for source, _ in copied(path)} == packages | {"pyproject.toml", LOCK.name}
