"""Store URLs, checked without any I/O, so a bad ``--prediction_store`` is refused at start.

    sqlite:///ABSOLUTE/PATH.db                      a file on this machine (no server)
    redis://[[USER]:PASSWORD@]HOST:PORT[/DB]        a Redis server (Memorystore); DB 0 if absent

Messages never repeat the URL's password.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import SplitResult, unquote, urlsplit

from serving.precomputed.api import BadStoreUrl

_FORMS = "sqlite:///ABSOLUTE/PATH.db or redis://HOST:PORT/DB"


@dataclass(frozen=True)
class SqliteUrl:
    path: str
    """Absolute path of the database file (created with its table on first use)."""


@dataclass(frozen=True)
class RedisUrl:
    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_store_url(url: str) -> SqliteUrl | RedisUrl:
    """The store ``url`` names; ``BadStoreUrl`` saying what is wrong with it otherwise."""
    if not isinstance(url, str) or "://" not in url:
        raise BadStoreUrl(f"Prediction store {_shown(url)} is not a URL; use {_FORMS}")
    try:
        parts = urlsplit(url)
    except ValueError as err:  # e.g. an unbalanced '[' in the host
        raise BadStoreUrl(f"Prediction store {_shown(url)} does not parse ({err}); use {_FORMS}") from None
    if parts.query or parts.fragment:
        raise BadStoreUrl(f"Prediction store {_shown(url)}: options ('?', '#') are not supported")
    if parts.scheme == "sqlite":
        return _sqlite(url, parts)
    if parts.scheme == "redis":
        return _redis(url, parts)
    raise BadStoreUrl(f"Prediction store {_shown(url)}: unknown scheme {parts.scheme!r}; use {_FORMS}")


def _sqlite(url: str, parts: SplitResult) -> SqliteUrl:
    path = unquote(parts.path)
    if parts.netloc or not path.startswith("/") or path == "/":
        raise BadStoreUrl(f"Prediction store {_shown(url)}: a sqlite URL needs an absolute file path "
                          "after three slashes, as in sqlite:///var/lib/predictions.db")
    return SqliteUrl(path)


def _redis(url: str, parts: SplitResult) -> RedisUrl:
    shown = _shown(url)
    try:
        port = parts.port
    except ValueError:
        raise BadStoreUrl(f"Prediction store {shown}: the port must be a number from 1 to 65535") from None
    if not parts.hostname:
        raise BadStoreUrl(f"Prediction store {shown}: a redis URL needs a host, as in redis://10.0.0.3:6379/0")
    if not port:
        raise BadStoreUrl(f"Prediction store {shown}: a redis URL needs a port, as in redis://{parts.hostname}:6379/0")
    db = parts.path.removeprefix("/")
    if db and not (db.isascii() and db.isdigit()):
        raise BadStoreUrl(f"Prediction store {shown}: the database must be a number (/0, /1, ...), got {db!r}")
    return RedisUrl(parts.hostname, port, int(db or 0),
                    unquote(parts.username) if parts.username else None,
                    unquote(parts.password) if parts.password is not None else None)


def _shown(url: object) -> str:
    """``url`` as messages show it: its password, if any, masked."""
    if not isinstance(url, str):
        return repr(url)
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return repr(url)
        userinfo, _, host = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        return repr(parts._replace(netloc=f"{user}:***@{host}").geturl())
    except ValueError:
        return "(a URL that does not parse)"
