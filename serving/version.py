"""The gateway's own version, as installed: ``--version`` and the v2 server metadata."""
from __future__ import annotations


def version() -> str:
    """The installed distribution's version, or "unknown" when run from a bare checkout."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("tf-gateway")
    except PackageNotFoundError:
        return "unknown"
