"""The one logging set-up of every entry point (server, pipelines, model builder, benchmarks)."""
from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr in one format; a no-op when the process already set logging up. A bare
    ``logging.basicConfig()`` does not count, and is replaced: Beam's ``PipelineOptions``
    makes one when built, which leaves the root logger at WARNING and would hide INFO lines
    (the pipelines' summaries)."""
    root = logging.getLogger()
    bare = bool(root.handlers) and all(_is_bare_default(handler) for handler in root.handlers)
    logging.basicConfig(level=level, format=FORMAT, force=bare)


def _is_bare_default(handler: logging.Handler) -> bool:
    """Whether ``handler`` is what ``logging.basicConfig()`` adds without arguments: a plain
    StreamHandler formatting as ``logging.BASIC_FORMAT`` does."""
    probe = logging.makeLogRecord({"name": "probe", "levelname": "INFO", "msg": "probe"})
    return (type(handler) is logging.StreamHandler and handler.formatter is not None
            and handler.formatter.format(probe) == logging.Formatter(logging.BASIC_FORMAT).format(probe))
