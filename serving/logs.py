"""The one logging set-up of every entry point (server, pipelines, model builder, benchmarks)."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

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


class RecurringErrors:
    """ERROR lines for problems a poll finds again and again (a wrong base path is looked at
    every second): a problem is logged when first seen, then only at growing intervals
    (``first_gap`` seconds, doubling up to ``max_gap``), each time with how often it recurred
    meanwhile. A problem whose text changes, or that comes back after ``clear``, is new. Calls
    for one key must not overlap (different keys may, from different threads)."""

    def __init__(self, logger: logging.Logger, first_gap: float = 10.0, max_gap: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._first_gap = first_gap
        self._max_gap = max_gap
        self._clock = clock
        self._seen: dict[Hashable, _Recurring] = {}

    def error(self, key: Hashable, message: str, detail: Callable[[], str] | None = None) -> None:
        """``message`` is the problem ``key`` (a model and a kind of problem) has now.
        ``detail`` gives text to append to it (what to check, which may take a listing of a
        folder or a bucket): it is called only when the line is logged, so a problem told
        rarely costs no more than that; a change in it alone does not make the problem new."""
        now = self._clock()
        seen = self._seen.get(key)
        if seen is None or seen.message != message:
            self._seen[key] = _Recurring(message, now, now + self._first_gap, self._first_gap)
            self._logger.error("%s%s", message, detail() if detail else "")
            return
        seen.unlogged += 1
        if now < seen.next_at:
            return
        self._logger.error("%s%s (again: %d times in the last %.0f s; told again in %.0f s if it goes on)",
                           message, detail() if detail else "", seen.unlogged, now - seen.logged_at,
                           min(2 * seen.gap, self._max_gap))
        seen.gap = min(2 * seen.gap, self._max_gap)
        seen.logged_at, seen.next_at, seen.unlogged = now, now + seen.gap, 0

    def clear(self, key: Hashable) -> None:
        """``key``'s problem is gone: the next one is logged at once."""
        self._seen.pop(key, None)


@dataclass
class _Recurring:
    message: str
    logged_at: float
    next_at: float
    gap: float
    unlogged: int = 0
