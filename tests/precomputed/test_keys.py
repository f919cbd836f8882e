"""One key normalisation for writer and reader: equal keys meet, anything else is refused."""
from __future__ import annotations

import numpy as np
import pytest

from serving.errors import InvalidArgument
from serving.precomputed.keys import store_key


@pytest.mark.parametrize("value", ["42", 42, np.int64(42), np.int32(42), np.uint8(42), b"42",
                                   np.bytes_(b"42"), np.str_("42"), np.array(42), np.array(b"42", dtype=object)])
def test_strings_and_integers_from_json_or_numpy_meet(value):
    assert store_key(value, "id") == "42"
    assert type(store_key(value, "id")) is str


def test_text_is_kept_as_is():
    assert store_key("café:1 ", "id") == "café:1 "
    assert store_key("café".encode(), "id") == "café"
    assert store_key(-7, "id") == "-7"
    assert store_key(2**70, "id") == str(2**70)


@pytest.mark.parametrize("value, described", [
    (True, "bool True"), (np.bool_(False), "bool"), (1.0, "float 1.0"),
    (np.float32(1.5), "float32"), (None, "NoneType None"), ([1], "list [1]"),
    (np.array([1, 2]), "an array of shape (2,)"), ({"a": 1}, "dict"),
])
def test_other_types_are_refused_naming_the_field(value, described):
    with pytest.raises(InvalidArgument, match=r"Key field 'user_id' must be a string or an integer, got ") as caught:
        store_key(value, "user_id")
    assert described in str(caught.value)


def test_bytes_that_are_not_utf8_are_refused():
    with pytest.raises(InvalidArgument, match="Key field 'user_id' holds bytes that are not UTF-8"):
        store_key(b"\xff", "user_id")
