"""Store URLs are checked before anything is opened, and a bad one says what is wrong."""
from __future__ import annotations

import pytest

from serving.precomputed import open_store
from serving.precomputed.api import BadStoreUrl
from serving.precomputed.urls import RedisUrl, SqliteUrl, parse_store_url


@pytest.mark.parametrize("url, parsed", [
    ("sqlite:///var/lib/p.db", SqliteUrl("/var/lib/p.db")),
    ("sqlite:///tmp/with%20space.db", SqliteUrl("/tmp/with space.db")),
    ("redis://10.0.0.3:6379/2", RedisUrl("10.0.0.3", 6379, 2)),
    ("redis://cache.internal:6380", RedisUrl("cache.internal", 6380, 0)),
    ("redis://[::1]:6379/0", RedisUrl("::1", 6379, 0)),
    ("redis://:s%40cret@10.0.0.3:6379/0", RedisUrl("10.0.0.3", 6379, 0, None, "s@cret")),
    ("redis://user:pw@10.0.0.3:6379/1", RedisUrl("10.0.0.3", 6379, 1, "user", "pw")),
])
def test_good_urls(url, parsed):
    assert parse_store_url(url) == parsed


@pytest.mark.parametrize("url, message", [
    ("", "is not a URL"),
    ("/var/lib/p.db", "is not a URL"),
    ("postgres://db:5432/p", "unknown scheme 'postgres'"),
    ("sqlite://p.db", "absolute file path"),
    ("sqlite:///", "absolute file path"),
    ("sqlite:", "is not a URL"),
    ("sqlite:///p.db?mode=ro", "options"),
    ("redis://:6379/0", "needs a host"),
    ("redis://10.0.0.3/0", "needs a port"),
    ("redis://10.0.0.3:notaport/0", "port must be a number"),
    ("redis://10.0.0.3:70000/0", "port must be a number"),
    ("redis://10.0.0.3:6379/x", "database must be a number"),
    ("redis://10.0.0.3:6379/-1", "database must be a number"),
    ("redis://10.0.0.3:6379/0/1", "database must be a number"),
    ("redis://[::1:6379/0", "does not parse"),
])
def test_bad_urls_are_refused_saying_why(url, message):
    with pytest.raises(BadStoreUrl, match=message) as caught:
        open_store(url, timeout_s=1.0)
    assert isinstance(caught.value, ValueError)  # what settings validators turn into a clear error


def test_a_password_is_never_repeated():
    with pytest.raises(BadStoreUrl) as caught:
        parse_store_url("redis://user:hunter2@10.0.0.3:6379/x")
    assert "hunter2" not in str(caught.value) and "user:***@10.0.0.3" in str(caught.value)
    assert "hunter2" not in repr(parse_store_url("redis://user:hunter2@10.0.0.3:6379/0"))
