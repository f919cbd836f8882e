"""A run leaves the checkout as it found it: every load test and benchmark writes under the
ignored ``bench-results/`` (runs against servers elsewhere: ``loadtest-results/``), and only
``make publish-results`` writes the committed tables."""
from __future__ import annotations

import ast
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.support.outputs import ELSEWHERE, RUNS
from loadtests.support.processes import REPO
from tests.conftest import require_tool

OUTPUT_FLAGS = ("--out", "--out-dir")
IGNORED_DEFAULTS = ("RUNS", "ELSEWHERE", "str(ELSEWHERE)")
TINY_PLAN = ["--batch-sizes", "16", "--timeouts-ms", "2", "--seconds", "1", "--warmup", "0.5",
             "--max-steps", "1", "--start-rate", "50"]
"""``make loadtest``'s whole sequence (sweep, naive, upstream, gRPC, spike, ramp) at one step each."""


def output_defaults() -> dict[str, str]:
    """``module:line`` -> the default (as written) of every output flag of a loadtests command."""
    found = {}
    for path in sorted((REPO / "loadtests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "add_argument" and node.args
                    and isinstance(node.args[0], ast.Constant) and node.args[0].value in OUTPUT_FLAGS):
                default = next((k.value for k in node.keywords if k.arg == "default"), None)
                found[f"{path.relative_to(REPO)}:{node.lineno}"] = ast.unparse(default) if default else "None"
    return found


def test_every_output_flag_defaults_to_an_ignored_folder():
    defaults = output_defaults()
    assert len(defaults) == 11, defaults  # run (local, remote), soak, the locustfile, seven benches
    assert {where: default for where, default in defaults.items()
            if not default.startswith(IGNORED_DEFAULTS)} == {}


@pytest.mark.parametrize("folder", [RUNS, REPO / ELSEWHERE], ids=["runs", "elsewhere"])
def test_the_output_folders_are_ignored_by_git(folder: Path):
    report = folder / "loadtest" / "loadtest.md"
    assert subprocess.run(["git", "check-ignore", "--no-index", "--quiet", str(report)], cwd=REPO).returncode == 0


def copy_of_the_checkout(into: Path) -> Path:
    """A fresh git repository holding the files of this checkout that git does not ignore, as
    they are now (edits and new files included)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        if (REPO / name).is_file():  # deleted but not yet committed: not in the copy
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, into / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    for step in (["init", "--quiet"], ["add", "--all"], ["commit", "--quiet", "--message", "copy"]):
        subprocess.run([*git, *step], cwd=into, check=True, capture_output=True)
    return into


@pytest.mark.slow
def test_make_loadtest_leaves_a_fresh_checkout_clean(tmp_path: Path, models_dir: Path):
    """``make loadtest``'s own command (read with ``make -n``) on a tiny plan, in a fresh copy
    whose models folder is a symlink: afterwards ``git status`` shows nothing."""
    checkout = copy_of_the_checkout(tmp_path / "checkout")
    (checkout / "models").symlink_to(models_dir)
    make = require_tool("make", install="apt-get install make")
    recipe = subprocess.run([make, "-n", "-s", "-o", ".venv/.extras-loadtest", "-o", "models/.built", "loadtest"],
                            cwd=checkout, capture_output=True, text=True, check=True).stdout.strip().splitlines()
    python, *args = shlex.split(recipe[-1])
    assert python == ".venv/bin/python" and args[:2] == ["-m", "loadtests.locust_scenarios.run"], recipe
    run = subprocess.run([sys.executable, *args, *TINY_PLAN], cwd=checkout, capture_output=True, text=True,
                         timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    status = subprocess.run(["git", "status", "--porcelain"], cwd=checkout, capture_output=True, text=True,
                            check=True).stdout
    assert status == ""
    written = checkout / "bench-results" / "loadtest"
    assert all((written / name).stat().st_size > 0 for name in ("loadtest.md", "loadtest.json", "sweep.png"))
