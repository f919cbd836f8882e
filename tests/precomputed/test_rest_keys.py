"""``serving.rest.keys.take_keys``: each instance's store key out of a parsed :predict body."""
from __future__ import annotations

import numpy as np
import pytest

from serving.errors import InvalidArgument
from serving.rest.keys import take_keys
from serving.runtime.signature import PREDICT, SignatureSpec, TensorSpec

SIGNATURE = SignatureSpec("serving_default", PREDICT, {
    "x": TensorSpec("x", np.dtype(np.float32), (None,)),
    "text": TensorSpec("text", np.dtype(object), (None,)),
}, {})


def test_row_format_keys_are_taken_off_every_instance():
    doc = {"instances": [{"x": 1.0, "id": "a"}, {"x": 2.0, "id": 7}]}
    assert take_keys(doc, "id", SIGNATURE) == ["a", 7]
    assert doc == {"instances": [{"x": 1.0}, {"x": 2.0}]}


def test_columnar_keys_are_taken_off_the_inputs():
    doc = {"inputs": {"x": [1.0, 2.0], "id": ["a", "b"]}}
    assert take_keys(doc, "id", SIGNATURE) == ["a", "b"]
    assert doc == {"inputs": {"x": [1.0, 2.0]}}


@pytest.mark.parametrize("doc", [
    {"instances": [{"x": 1.0, "text": "a"}]},
    {"inputs": {"x": [1.0], "text": ["a"]}},
])
def test_a_key_that_is_an_input_stays_one(doc):
    before = repr(doc)
    assert take_keys(doc, "text", SIGNATURE) == ["a"]
    assert repr(doc) == before


@pytest.mark.parametrize("doc", [
    {"instances": [{"x": 1.0}, {"x": 2.0}]},
    {"instances": [1.0, 2.0]},
    {"instances": "not a list"},
    {"inputs": {"x": [1.0]}},
    {"inputs": [1.0]},
    {"inputs": {"x": [1.0], "id": ["a"]}, "instances": [{"x": 1.0}]},  # the codec refuses both
    {},
])
def test_no_keys_leaves_the_body_to_the_codec(doc):
    before = repr(doc)
    assert take_keys(doc, "id", SIGNATURE) is None
    assert repr(doc) == before


def test_a_key_missing_from_some_instances_is_refused_naming_the_first():
    doc = {"instances": [{"x": 1.0, "id": "a"}, {"x": 2.0}, {"x": 3.0, "id": "c"}, [4.0]]}
    with pytest.raises(InvalidArgument, match=r"Key field 'id' is missing from instance 1 .*2 of 4"):
        take_keys(doc, "id", SIGNATURE)


def test_columnar_keys_must_be_a_list():
    with pytest.raises(InvalidArgument, match="Key field 'id' of 'inputs' must be a list .* got str"):
        take_keys({"inputs": {"x": [1.0], "id": "a"}}, "id", SIGNATURE)
