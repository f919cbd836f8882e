"""The gateway image's entry point script, run as the image runs it but with a stand-in
``python`` first on PATH that prints the command line it was given (no Docker needed)."""
from __future__ import annotations

import subprocess
from pathlib import Path

from tests.deploy.manifests import DEPLOY

SCRIPT = DEPLOY / "containers" / "tf_serving_entrypoint.sh"
IMAGE_PATH = "/usr/bin/tf_serving_entrypoint.sh"
"""Where the gateway image puts it: where tensorflow/serving's image has its own."""
_ECHO_PYTHON = "#!/bin/sh\nprintf '%s\\n' python \"$@\"\n"


def command_line(bin_dir: Path, env: dict[str, str], *args: str) -> list[str]:
    """The words the script runs (``python`` and its arguments) with ``env`` as the whole
    environment besides PATH, and ``args`` as the container's arguments."""
    python = bin_dir / "python"
    if not python.exists():
        python.write_text(_ECHO_PYTHON)
        python.chmod(0o755)
    done = subprocess.run([str(SCRIPT), *args], env={**env, "PATH": f"{bin_dir}:/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.splitlines()
