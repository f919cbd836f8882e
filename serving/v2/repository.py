"""What the model repository extension's requests may ask, read the same way from REST JSON
and gRPC messages (the work itself is ``serving.core.repository``'s).

One repository: a ``repository_name`` is refused rather than ignored. A load takes no
``config`` and no ``file:<version>/<path>`` parameters: a model is loaded from its folder
under the model roots, never from a client's config or files.
"""
from __future__ import annotations

from collections.abc import Iterable

from serving.errors import InvalidArgument
from serving.runtime.shapes import label


def check_repository_name(name: object) -> None:
    """InvalidArgument for a named repository (empty or absent: ours)."""
    if name:
        raise InvalidArgument("Named repositories are not supported: leave 'repository_name' empty")


def check_load_parameters(keys: Iterable[str]) -> None:
    """InvalidArgument for a load's ``config`` or ``file:*`` parameter; others are ignored."""
    refused = next((key for key in keys if key == "config" or key.startswith("file:")), None)
    if refused is not None:
        raise InvalidArgument(f"Parameter {label(refused)} is not supported: a model is loaded from its "
                              "folder under the model roots")
