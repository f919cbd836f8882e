"""Model roots: the only places a client may make the server read a model from.

``HandleReloadConfigRequest`` names base paths, and loading a SavedModel runs its graph: a
client that could name any path could run code of its choosing in the server. So every base
path of a reload must lie inside a model root the operator configured, or the whole request
is refused (PERMISSION_DENIED) before anything is read and nothing changes.

Roots are ``--model_roots`` when set. Otherwise, for each model configured at start, the
folder that holds its base path (``/models`` for ``/models/natality``, ``gs://b/models`` for
``gs://b/models/natality``), so a reload may add models beside the configured ones; but
where that folder is ``/``, a whole bucket, or a folder anyone may write to (``/tmp``), the
base path itself.

Inside, for a local path: the path (absolute, ``..``/``.``/repeated and trailing slashes
normalised) lies under a root as written, and the path with its symlinks resolved lies under
a root with its symlinks resolved. The file system is touched only for paths that pass the
first test. For a URL (``gs://bucket/prefix``, ``s3://...``): the same scheme and bucket, and
the object prefix starts with the root's, compared segment by segment (empty segments, from
repeated or trailing slashes, dropped); ``.`` and ``..`` segments are refused outright, as
object stores do not resolve them. A URL is never inside a local root, nor the reverse.
"""
from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import PurePosixPath

from serving.errors import PermissionDenied
from serving.settings import ModelConfig, Settings

log = logging.getLogger(__name__)

_Url = tuple[str, str, tuple[str, ...]]  # scheme, bucket, prefix segments


def _is_url(path: str) -> bool:
    return "://" in path  # as serving.tfs_config.resolve_base_path decides


def _parse_url(path: str) -> _Url:
    """``gs://bucket/a//b/`` → ``("gs", "bucket", ("a", "b"))``; ValueError if malformed."""
    scheme, _, rest = path.partition("://")
    bucket, *segments = rest.split("/")
    parts = tuple(segment for segment in segments if segment)
    if not scheme or not bucket:
        raise ValueError(f"{path!r} is not SCHEME://BUCKET[/PREFIX]")
    if any(part in (".", "..") for part in parts):
        raise ValueError(f"{path!r} has a '.' or '..' segment")
    return scheme.lower(), bucket, parts


def _under(path: str, root: str) -> bool:
    return PurePosixPath(path).is_relative_to(root)


def default_roots(base_paths: Iterable[str]) -> tuple[str, ...]:
    """The roots when ``--model_roots`` is not set (see the module's docstring)."""
    roots: list[str] = []
    for base in base_paths:
        if _is_url(base):
            scheme, bucket, parts = _parse_url(base)
            kept = parts[:-1] if len(parts) > 1 else parts  # never the whole bucket
            roots.append(f"{scheme}://{bucket}/" + "/".join(kept))
            continue
        base = os.path.normpath(os.path.abspath(base))
        parent = os.path.dirname(base)
        if parent == os.path.dirname(parent) or _writable_by_anyone(parent):
            roots.append(base)
        else:
            roots.append(parent)
    return tuple(dict.fromkeys(roots))


def _writable_by_anyone(folder: str) -> bool:
    try:
        return bool(os.stat(folder).st_mode & stat.S_IWOTH)
    except OSError:  # not there (yet): assume the worst
        return True


class ModelRoots:
    """Checks the base paths a client names against the operator's roots."""

    def __init__(self, roots: Iterable[str]) -> None:
        """ValueError for a malformed URL root; local roots are made absolute here."""
        self.roots = tuple(roots)
        self._urls = [_parse_url(root) for root in self.roots if _is_url(root)]
        self._local = [os.path.normpath(os.path.abspath(root))
                       for root in self.roots if not _is_url(root)]

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRoots:
        """``settings.model_roots``, else the defaults for the models configured at start."""
        if settings.model_roots:
            return cls(settings.model_roots)
        return cls(default_roots(model.base_path for model in settings.models))

    def contains(self, path: str) -> bool:
        """Whether the server may read a model from ``path``."""
        if _is_url(path):
            try:
                scheme, bucket, parts = _parse_url(path)
            except ValueError:
                return False
            return any(scheme == s and bucket == b and parts[:len(p)] == p for s, b, p in self._urls)
        try:
            lexical = os.path.normpath(os.path.abspath(path))
            if not any(_under(lexical, root) for root in self._local):
                return False  # the file system is never asked about such a path
            real = os.path.realpath(path)
            return any(_under(real, os.path.realpath(root)) for root in self._local)
        except ValueError:  # an embedded NUL byte
            return False

    def check(self, configs: Iterable[ModelConfig], where: str) -> None:
        """PermissionDenied naming the first model whose base path is outside every root."""
        for config in configs:
            if not self.contains(config.base_path):
                log.warning("%s refused: model %r base_path %r is outside the model roots %s",
                            where, config.name, config.base_path, list(self.roots))
                raise PermissionDenied(
                    f"{where}: model {config.name!r}: base_path {config.base_path!r} is outside "
                    "the model roots this server allows (--model_roots); nothing was changed")
