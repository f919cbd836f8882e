"""The documentation works as written: every link and anchor resolves, no word of the
project's own history is left for a reader to puzzle over, and every command of the
READMEs and docs/ is checked (its program and flags exist) and, where it is cheap and needs
nothing from outside this machine, run (against a gateway serving ``make serve``'s models).
Run with ``-s`` to see each command's verdict and the counts."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.conftest import Gateway, free_port, missing_outside
from tests.docs_commands import DOCS, REPO, Command, all_shell_commands, anchors, links, python_snippets

PYTHON = sys.executable
PLAIN_WORDS = re.compile(r"\b(goal [0-9]|goals [0-9]|issue [0-9]+|issue's|the course|a helper|session note)\b",
                         re.IGNORECASE)


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(REPO)) for p in DOCS])
def test_every_link_and_anchor_resolves(path):
    broken = []
    for line, target in links(path):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            broken.append(f"{line}: {target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{line}: {target} (no such heading)")
    assert broken == [], f"{path.relative_to(REPO)}: {broken}"


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(REPO)) for p in DOCS])
def test_no_word_a_reader_cannot_know(path):
    found = [f"{n}: {m.group(0)}" for n, line in enumerate(path.read_text().splitlines(), 1)
             for m in PLAIN_WORDS.finditer(line)]
    assert found == [], f"{path.relative_to(REPO)}: {found}"


def test_the_readme_is_a_map():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 260, f"README.md has {len(lines)} lines; the reference belongs in docs/"
    readme = "\n".join(lines)
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"


# --- the commands ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served():
    """A gateway as ``make serve`` runs it, on free ports: (REST port, gRPC port)."""
    from serving.cli import build_settings

    rest, grpc = free_port(), free_port()
    settings = build_settings([f"--port={grpc}", f"--rest_api_port={rest}", "--model_config_file=models/models.config",
                               "--enable_batching", "--batching_parameters_file=serving/examples/batching.config"],
                              environ={})
    with Gateway(settings):
        yield rest, grpc


def _env(tmp_path) -> dict[str, str]:
    return {**os.environ, "PWD": str(REPO), "REG": "europe-docker.pkg.dev/my-project/tf-gateway",
            "TF_CPP_MIN_LOG_LEVEL": "2"}


def _local(text: str, served: tuple[int, int]) -> str:
    rest, grpc = served
    return text.replace("localhost:8501", f"127.0.0.1:{rest}").replace("localhost:8500", f"127.0.0.1:{grpc}")


def _python(argv: list[str]) -> list[str]:
    return [PYTHON, *argv[1:]] if argv[0] in (".venv/bin/python", "python", "python3") else argv


def _bash(text: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", text], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _flags(argv: list[str]) -> list[str]:
    return [word.split("=", 1)[0] for word in argv if word.startswith("--")]


def _help_lists_the_flags(argv: list[str], env: dict[str, str], also: str = "") -> None:
    """The program runs with ``--help`` after the command's own words, and its help (or
    ``also``) names every flag the command uses."""
    words = [w for w in argv if w != "--help"]
    done = subprocess.run([*words, "--help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    missing = [flag for flag in _flags(words) if flag not in done.stdout and f'"{flag}"' not in also]
    assert missing == [], f"not in {words[:3]} --help: {missing}"


def _make_targets() -> set[str]:
    return set(re.findall(r"^([\w.-]+):", (REPO / "Makefile").read_text(), re.M))


def _paths_exist(argv: list[str], options: tuple[str, ...]) -> None:
    for option, value in zip(argv, argv[1:]):
        if option in options and value != "-":
            assert (REPO / value).exists(), f"{option} {value}: no such path"


def verdict(command: Command, served: tuple[int, int], env: dict[str, str]) -> str:
    """Check ``command`` and run it where that is cheap and local; say which was done."""
    argv, program, text = command.argv, command.program, command.text
    if not argv:
        return "checked (an assignment)"
    if program == "make":
        missing = [t for t in argv[1:] if "=" not in t and t not in _make_targets()]
        assert missing == [], f"no make target {missing}"
        return "checked (make target exists)"
    if program in ("printf", "echo"):
        assert _bash(text, env).returncode == 0
        return "run"
    if program == "curl":
        done = _bash(_local(text, served), env)
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert "error" not in answer, answer
        return "run"
    if program in (".venv/bin/python", "python", "python3"):
        return _python_verdict(command, _python(argv), env)
    if program == "locust":  # its --help leaves out a locustfile's own flags: they are in the file
        locustfile = (REPO / argv[argv.index("-f") + 1]).read_text()
        _help_lists_the_flags([PYTHON, "-m", "locust", *argv[1:]], env, also=locustfile)
        return "checked (flags in --help or the locustfile)"
    if program == "kubectl" and argv[1:2] == ["kustomize"]:
        if shutil.which("kubectl") is None:
            missing_outside("kubectl is not installed", "install it to render deploy/ (tests/deploy/ say how)")
        done = _bash(text.replace(".venv/bin/kubernetes-validate", str(REPO / ".venv/bin/kubernetes-validate")), env)
        assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-1000:]
        return "run"
    if program in ("kubectl", "kustomize"):
        _paths_exist(argv, ("-k", "-f") if {"apply", "create", "delete"} & set(argv) else ("-k",))
        return "checked (paths exist); not run: needs a cluster"
    if program == "docker":
        _paths_exist(argv, ("-f",))
        return "checked (Dockerfile exists); not run: needs a Docker engine"
    if program == "gcloud":
        _paths_exist(argv, ("--metadata-file",))
        return "checked (files exist); not run: needs Google Cloud"
    raise AssertionError(f"{command.where}: no rule for a command of {program!r}: {text}")


def _python_verdict(command: Command, argv: list[str], env: dict[str, str]) -> str:
    if argv[1:3] == ["-m", "serving"]:
        words = [w.replace("$PWD", str(REPO)) for w in argv[3:]]
        if any("://" in w for w in words):  # an object store the command's environment names
            _help_lists_the_flags([PYTHON, "-m", "serving", *words], env)
            return "checked (flags in --help)"
        from serving.cli import build_settings

        build_settings(words, environ={})
        return "checked (the gateway's flags and files parse)"
    if argv[1:3] == ["-m", "pytest"]:
        assert all((REPO / w.split("::")[0]).exists() for w in argv[3:] if w.startswith("tests/"))
        return "checked (test paths exist)"
    if argv[1] in ("batch/run.py", "streaming/run.py"):
        words = list(argv)
        local = "DataflowRunner" not in words
        if not local and "--dry_run=True" not in words:
            words += ["--dry_run=True", "--no_auth"]
        if argv[1] == "streaming/run.py" and local:
            _help_lists_the_flags(words, env)
            return "checked (flags in --help); not run: reads Pub/Sub"
        done = subprocess.run(words, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return "run" if words == list(argv) else "run (as a dry run)"
    _help_lists_the_flags(argv, env)
    return "checked (flags in --help)"


@pytest.mark.slow
def test_every_command_in_the_docs_is_checked_and_the_cheap_ones_run(served, tmp_path):
    env = _env(tmp_path)
    found = all_shell_commands()
    verdicts = []
    for command in found:
        try:
            verdicts.append((command, verdict(command, served, env)))
        except AssertionError as error:
            raise AssertionError(f"{command.where}: {command.text}\n{error}") from None
    for command, said in verdicts:
        print(f"\nCOMMAND {command.where}: {said}: {command.text[:100]}")
    ran = sum(1 for _, said in verdicts if said.startswith("run"))
    print(f"\nCOMMANDS found {len(found)}, checked {len(verdicts)}, run {ran}")
    assert len(verdicts) == len(found) and ran >= 8


@pytest.mark.slow
def test_the_python_examples_run_against_the_served_models(served):
    snippets = python_snippets()
    assert snippets, "no Python example found"
    for block in snippets:
        done = subprocess.run([PYTHON, "-c", _local(block.text, served)], cwd=REPO, capture_output=True,
                              text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        assert done.returncode == 0, f"{block.path.name}:{block.line}: {done.stderr[-2000:]}"
        assert re.search(r"\d", done.stdout), done.stdout


def test_commands_are_split_as_a_shell_reads_them():
    from tests.docs_commands import Block, commands

    block = Block(REPO / "README.md", 1, "sh", "make a   # comment\n# only a comment\nx --one \\\n  --two 'a # b'\n"
                  "kubectl apply -f - <<'YAML'\nkind: X\nYAML\nREG=r docker build -t $REG/x .")
    texts = [c.text for c in commands(block)]
    assert texts == ["make a", "x --one --two 'a # b'", "kubectl apply -f - <<'YAML'", "REG=r docker build -t $REG/x ."]
    assert commands(block)[3].program == "docker"
    assert shlex.split(texts[1]) == ["x", "--one", "--two", "a # b"]
