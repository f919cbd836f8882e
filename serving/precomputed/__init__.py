"""Predictions computed ahead by batch jobs, for the gateway to answer from.

A batch job writes each row's outputs (``codec.encode_rows``) under (model name, model
version, ``keys.store_key(row[key_field])``); the gateway looks up the instances of a
request by the same triple, answers those it finds from the store and sends the rest to the
model. Stores speak bytes only (``api.PredictionStore``); ``open_store`` picks one from
its URL (``urls``): ``sqlite:///ABSOLUTE/PATH.db`` (embedded, the default) or
``redis://HOST:PORT/DB`` (production: Memorystore).
"""
from __future__ import annotations

from serving.precomputed.api import PredictionStore
from serving.precomputed.urls import SqliteUrl, parse_store_url


def open_store(url: str, *, timeout_s: float) -> PredictionStore:
    """The store ``url`` names (``BadStoreUrl`` if it cannot be used). Opening does no I/O:
    the first call connects, so a gateway starts while its store is down, and falls back."""
    if not timeout_s > 0:
        raise ValueError(f"A store timeout must be a positive number of seconds, got {timeout_s!r}")
    where = parse_store_url(url)
    if isinstance(where, SqliteUrl):
        from serving.precomputed.sqlite_store import SqliteStore

        return SqliteStore(where.path, timeout_s)
    from serving.precomputed.redis_store import RedisStore  # redis-py only where it is used

    return RedisStore(where, timeout_s)
