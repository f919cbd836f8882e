"""serving/v2/request.py: request, input and output parameters as REST and gRPC hand them
over (plain Python values), and which outputs an answer carries."""
from __future__ import annotations

import numpy as np
import pytest

from serving.errors import InvalidArgument
from serving.runtime.signature import PREDICT, SignatureSpec, TensorSpec
from serving.v2 import request
from serving.v2.datatypes import BY_NAME
from serving.v2.request import Output, Parameters, Wanted


def test_absent_or_empty_parameters_are_the_defaults():
    assert request.parameters(None) == request.parameters({}) == Parameters(None, False, None)


def test_the_parameters_we_use():
    got = request.parameters({"signature_name": "other", "binary_data_output": True, "timeout": 1500})
    assert got == Parameters("other", True, 1500)
    assert request.parameters({"signature_name": "", "timeout": 0}) == Parameters()  # 0: Triton's "no timeout"


@pytest.mark.parametrize("params", [
    {"priority": 3}, {"custom": "x"}, {"triton_thing": 1.5}, {"headers": "h"},
    {"sequence_id": 0}, {"sequence_id": ""}, {"sequence_start": False, "sequence_end": False},
], ids=str)
def test_other_parameters_are_ignored(params):
    assert request.parameters(params) == Parameters()


BAD = [
    ({"signature_name": 3}, "Parameter 'signature_name' must be a string"),
    ({"binary_data_output": "true"}, "Parameter 'binary_data_output' must be a boolean"),
    ({"binary_data_output": 1}, "must be a boolean"),
    ({"timeout": -1}, "Parameter 'timeout' must be a non-negative integer (microseconds)"),
    ({"timeout": True}, "'timeout' must be"),
    ({"timeout": 1.5}, "'timeout' must be"),
    ({"timeout": "10"}, "'timeout' must be"),
    ({"sequence_id": 3}, "Parameter 'sequence_id': sequence batching is not supported"),
    ({"sequence_id": "abc"}, "sequence batching is not supported"),
    ({"sequence_start": True}, "Parameter 'sequence_start': sequence batching is not supported"),
    ({"sequence_end": True}, "Parameter 'sequence_end': sequence batching is not supported"),
    ({"classification": 3}, "The request: the classification extension is not supported"),
    ({"shared_memory_region": "r"}, "the shared memory extension is not supported"),
    ({"k": [1]}, "The request's parameters: parameter 'k' must be a boolean, number or string, got list"),
    ({"k": None}, "got NoneType"),
    ({"k": {"a": 1}}, "got dict"),
    ([("timeout", 1)], "The request's parameters must be an object, got list"),
    ("timeout", "must be an object, got str"),
]


@pytest.mark.parametrize("params,message", BAD, ids=[str(p) for p, _ in BAD])
def test_bad_parameters_are_invalid_argument_naming_the_parameter(params, message):
    with pytest.raises(InvalidArgument) as raised:
        request.parameters(params)
    assert message in raised.value.message and raised.value.http_status == 400


def test_an_inputs_binary_data_size():
    assert request.binary_data_size(None, "x") is None
    assert request.binary_data_size({"binary_data_size": 12, "other": 1}, "x") == 12
    assert request.binary_data_size({"binary_data_size": 0}, "x") == 0
    for size in (-1, True, "12", 1.0):
        with pytest.raises(InvalidArgument, match="^Input 'x': parameter 'binary_data_size' must be a non-neg"):
            request.binary_data_size({"binary_data_size": size}, "x")
    with pytest.raises(InvalidArgument, match="^Input 'x': parameter 'shared_memory_offset': the shared memory"):
        request.binary_data_size({"shared_memory_offset": 0}, "x")
    with pytest.raises(InvalidArgument, match="^Input 'x''s parameters must be an object"):
        request.binary_data_size(7, "x")


def test_a_requested_output():
    assert request.wanted("y", None) == Wanted("y", None)
    assert request.wanted("y", {"binary_data": True, "other": "x"}) == Wanted("y", True)
    with pytest.raises(InvalidArgument, match="A requested output's name must be a string, got int"):
        request.wanted(3, None)
    with pytest.raises(InvalidArgument, match="Output 'y': parameter 'binary_data' must be a boolean"):
        request.wanted("y", {"binary_data": "yes"})
    with pytest.raises(InvalidArgument, match="Output 'y': the classification extension is not supported"):
        request.wanted("y", {"classification": 3})  # tritonclient's class_count
    with pytest.raises(InvalidArgument, match="Output 'y': parameter 'shared_memory_region'"):
        request.wanted("y", {"shared_memory_region": "r"})


def _signature(*outputs: tuple[str, type, str]) -> SignatureSpec:
    x = TensorSpec("x", np.dtype(np.float32), (None,), "DT_FLOAT")
    return SignatureSpec("serving_default", PREDICT, {"x": x}, {
        name: TensorSpec(name, np.dtype(dtype), (None,), tf_name) for name, dtype, tf_name in outputs})


SPEC = _signature(("b", np.int64, "DT_INT64"), ("a", np.float32, "DT_FLOAT"), ("s", object, "DT_STRING"))
FP32, INT64, BYTES = BY_NAME["FP32"], BY_NAME["INT64"], BY_NAME["BYTES"]


def test_no_outputs_requested_means_all_sorted_by_name():
    everything = [Output("a", FP32, False), Output("b", INT64, False), Output("s", BYTES, False)]
    assert request.select_outputs(SPEC, None, "m") == request.select_outputs(SPEC, [], "m") == everything
    assert [o.binary for o in request.select_outputs(SPEC, None, "m", binary_data_output=True)] == [True] * 3


def test_requested_outputs_in_the_requests_order_each_binary_as_it_says_else_as_the_request_says():
    wanted = [Wanted("s", False), Wanted("b"), Wanted("a", True)]
    assert request.select_outputs(SPEC, wanted, "m", binary_data_output=True) == [
        Output("s", BYTES, False), Output("b", INT64, True), Output("a", FP32, True)]
    assert [o.binary for o in request.select_outputs(SPEC, wanted, "m")] == [False, False, True]


def test_an_unknown_output_is_tritons_invalid_argument():
    with pytest.raises(InvalidArgument) as raised:
        request.select_outputs(SPEC, [Wanted("a"), Wanted("z")], "m")
    assert raised.value.message == "unexpected inference output 'z' for model 'm'"
    assert (raised.value.http_status, raised.value.grpc_code) == (400, "INVALID_ARGUMENT")


def test_an_output_requested_twice_is_refused():
    with pytest.raises(InvalidArgument, match="^Output 'a' is requested twice$"):
        request.select_outputs(SPEC, [Wanted("a"), Wanted("b"), Wanted("a", True)], "m")


def test_an_output_v2_cannot_carry_is_refused_with_a_way_out():
    spec = _signature(("a", np.float32, "DT_FLOAT"), ("c", np.complex64, "DT_COMPLEX64"))
    with pytest.raises(InvalidArgument) as raised:
        request.select_outputs(spec, None, "m")
    assert raised.value.message == ("Output 'c' of model 'm' is DT_COMPLEX64, which no Open Inference Protocol "
                                    "datatype carries; request the other outputs by name in 'outputs'")
    with pytest.raises(InvalidArgument, match="carries$"):
        request.select_outputs(spec, [Wanted("c")], "m")
    assert request.select_outputs(spec, [Wanted("a")], "m") == [Output("a", FP32, False)]


@pytest.mark.parametrize("version,choice", [
    ("", (None, None)), ("1", (1, None)), ("007", (7, None)), ("stable", (None, "stable")),
    ("-1", (None, "-1")), ("1.0", (None, "1.0")), ("\u0663", (None, "\u0663")),  # an Arabic-Indic 3 is no version
])
def test_a_version_string_is_a_number_a_label_or_the_newest(version, choice):
    assert request.version_choice(version) == choice
