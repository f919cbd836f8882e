"""serving/v2/datatypes.py: the table against tritonclient's and the proto's, lookups both
ways, and the declared-datatype check. (Against TensorFlow's own dtypes:
``test_tf_signatures.py``.)"""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from tritonclient.utils import np_to_triton_dtype, triton_to_np_dtype

from serving.errors import InvalidArgument
from serving.runtime.signature import STRING, TensorSpec
from serving.v2 import datatypes, protos
from serving.v2.datatypes import BY_NAME, DATATYPES

SPEC_NAMES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
              "FP16", "FP32", "FP64", "BYTES"]
"""The datatypes of inference_rest.md's table, in its order; BF16 comes from the proto and Triton."""


def test_the_table_is_the_specs_plus_bf16_in_its_order():
    assert [dt.name for dt in DATATYPES if dt.name != "BF16"] == SPEC_NAMES
    assert "BF16" in BY_NAME


@pytest.mark.parametrize("dt", DATATYPES, ids=lambda dt: dt.name)
def test_numpy_dtypes_are_tritonclients(dt):
    """tritonclient builds and reads arrays with these dtypes (BYTES: object arrays)."""
    assert np.dtype(triton_to_np_dtype(dt.name)) == dt.dtype
    assert np_to_triton_dtype(dt.dtype) == dt.name
    assert datatypes.for_dtype(dt.dtype) is dt


def test_bf16_is_ml_dtypes_bfloat16_and_bytes_our_string_arrays():
    assert BY_NAME["BF16"].dtype == np.dtype(ml_dtypes.bfloat16)
    assert datatypes.BYTES.dtype == STRING


def test_sizes_are_the_binary_layouts():
    sizes = {dt.name: dt.itemsize for dt in DATATYPES}
    assert sizes == {"BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8, "INT8": 1, "INT16": 2,
                     "INT32": 4, "INT64": 8, "FP16": 2, "BF16": 2, "FP32": 4, "FP64": 8, "BYTES": None}
    for dt in DATATYPES:
        if dt.itemsize is not None:
            assert dt.wire.itemsize == dt.itemsize and dt.wire.byteorder in "<|="


def test_each_typed_field_is_in_the_proto_and_every_proto_field_has_a_datatype():
    fields = {dt.name: dt.field for dt in DATATYPES}
    assert fields["FP16"] is None and fields["BF16"] is None  # raw contents only
    proto_fields = set(protos.InferTensorContents.DESCRIPTOR.fields_by_name)
    assert {f for f in fields.values() if f} == proto_fields
    assert fields["UINT16"] == "uint_contents" and fields["INT8"] == "int_contents"
    assert fields["UINT64"] == "uint64_contents" and fields["BYTES"] == "bytes_contents"


@pytest.mark.parametrize("value", ["FP128", "fp32", "", "TYPE_FP32", "X" * 10_000])
def test_an_unknown_datatype_is_invalid_argument_naming_the_input(value):
    with pytest.raises(InvalidArgument, match="Input 'x' has datatype '") as raised:
        datatypes.by_name(value, "x")
    assert "FP32" in raised.value.message and len(raised.value.message) < 300


@pytest.mark.parametrize("value", [3, None, ["FP32"], {"FP32": 1}, True])
def test_a_datatype_that_is_no_string_is_invalid_argument_naming_the_input(value):
    message = f"Input 'x': 'datatype' must be a string, .*; got {type(value).__name__}$"
    with pytest.raises(InvalidArgument, match=message):
        datatypes.by_name(value, "x")


def test_by_name_finds_each():
    for dt in DATATYPES:
        assert datatypes.by_name(dt.name, "x") is dt


def spec(dtype, dtype_name: str = "", name: str = "x") -> TensorSpec:
    return TensorSpec(name, np.dtype(dtype), (None,), dtype_name)


def test_check_accepts_exactly_the_models_datatype():
    assert datatypes.check("FP32", spec(np.float32, "DT_FLOAT")) is BY_NAME["FP32"]
    assert datatypes.check("BYTES", spec(object, "DT_STRING")) is datatypes.BYTES
    with pytest.raises(InvalidArgument, match="^Input 'x' has datatype FP64; the model expects FP32$"):
        datatypes.check("FP64", spec(np.float32, "DT_FLOAT"))
    with pytest.raises(InvalidArgument, match="Input 'x' has datatype 'FP3'"):
        datatypes.check("FP3", spec(np.float32, "DT_FLOAT"))


def test_check_names_a_model_dtype_v2_cannot_carry():
    with pytest.raises(InvalidArgument, match="Input 'c': the model expects DT_COMPLEX64, which no Open"):
        datatypes.check("FP32", spec(np.complex64, "DT_COMPLEX64", "c"))


def test_for_spec_reads_tensorflows_name_or_else_the_numpy_dtype():
    assert datatypes.for_spec(spec(ml_dtypes.bfloat16)) is BY_NAME["BF16"]
    assert datatypes.for_spec(spec(np.uint16, "DT_UINT16")) is BY_NAME["UINT16"]
    assert datatypes.for_spec(spec(np.int8, "DT_QINT8")) is None  # quantized: TF's name decides
    assert datatypes.for_spec(spec(np.complex128, "DT_COMPLEX128")) is None


def test_type_name_is_v2s_or_tensorflows_without_dt():
    assert datatypes.type_name(spec(np.float16, "DT_HALF")) == "FP16"
    assert datatypes.type_name(spec(np.complex64, "DT_COMPLEX64")) == "COMPLEX64"
    assert datatypes.type_name(spec(np.complex64)) == "complex64"
