"""requirements.lock (`make lock`) against pyproject.toml, and the `pip install` commands that
must install through it (Makefile, Dockerfiles). Read offline: no resolver, no index.

The lock is a pip constraints file over the base install and every extra: each image and the
venv install their own extra with it (`pip install -c requirements.lock '.[batch]'`), so it
must pin every requirement of the base and of each extra, at a version the requirement allows.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO

LOCK = REPO / "requirements.lock"

TARGET = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",  # as uv reads `--python-version 3.11`
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
}
"""The environment `make lock` resolves for (the images' and CI's): markers are read for it."""


class LockError(ValueError):
    """A line of the lock that is not an exact pin (an option, a range, a URL)."""


def _applies(requirement: Requirement) -> bool:
    return requirement.marker is None or requirement.marker.evaluate(TARGET)


def pins(lock_text: str) -> dict[str, Version]:
    """Canonical name -> pinned version, of the lock's lines whose markers hold for TARGET.

    Anything but `name==version` (an index URL, find-links, a range) is a LockError: the lock
    holds versions only, nothing of the machine that wrote it."""
    pinned = {}
    for line in lock_text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement as error:
            raise LockError(f"not a pin: {line!r} ({error})") from None
        specifiers = list(requirement.specifier)
        exact = len(specifiers) == 1 and specifiers[0].operator == "==" and "*" not in specifiers[0].version
        if not exact or requirement.extras:  # pip refuses extras in a constraints file
            raise LockError(f"not an exact pin: {line!r}")
        if _applies(requirement):
            pinned[canonicalize_name(requirement.name)] = Version(specifiers[0].version)
    return pinned


def unmet(project: dict, pinned: dict[str, Version]) -> list[str]:
    """Each requirement of pyproject's [project] table (the base and every extra) that applies
    on TARGET and that the lock leaves unpinned or pins where the requirement forbids; and each
    self-reference (`tf-gateway[...]`) to an extra that does not exist."""
    name = canonicalize_name(project["name"])
    extras = project.get("optional-dependencies", {})
    sources = {"dependencies": project.get("dependencies", []),
               **{f"[{extra}]": listed for extra, listed in extras.items()}}
    problems = []
    for source, listed in sources.items():
        for line in listed:
            requirement = Requirement(line)
            if not _applies(requirement):
                continue
            if canonicalize_name(requirement.name) == name:
                problems += [f"{source}: {line}: no extra {e!r}" for e in sorted(requirement.extras - set(extras))]
                continue  # every extra is checked in its own right
            version = pinned.get(canonicalize_name(requirement.name))
            if version is None:
                problems.append(f"{source}: {line}: not in the lock")
            elif not requirement.specifier.contains(version, prereleases=True):
                problems.append(f"{source}: {line}: the lock pins {version}")
    return problems


@dataclass(frozen=True)
class PipInstall:
    """One `pip install` command: what it installs and the constraints files it passes."""

    targets: tuple[str, ...]
    constraints: tuple[str, ...]


def pip_installs(shell: str) -> list[PipInstall]:
    """The `pip install` commands in shell text (continuation lines already joined), split at
    `&&`, `;` and line ends. `-e X` counts as target X; other options are flags."""
    found = []
    for command in re.split(r"&&|;|\n", shell):
        words = shlex.split(command) if re.search(r"\bpip install\b", command) else []
        starts = [i for i in range(len(words) - 1) if words[i].endswith("pip") and words[i + 1] == "install"]
        for start in starts:
            targets, constraints, args = [], [], iter(words[start + 2:])
            for word in args:
                if word in ("-c", "--constraint"):
                    constraints.append(next(args))
                elif word in ("-e", "--editable"):
                    targets.append(next(args))
                elif not word.startswith("-"):
                    targets.append(word)
            found.append(PipInstall(tuple(targets), tuple(constraints)))
    return found
