"""The one logging set-up of every entry point (server, pipelines, model builder, benchmarks)."""
from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr in one format; a no-op when the process already set logging up."""
    logging.basicConfig(level=level, format=FORMAT)
