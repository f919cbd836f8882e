"""Pure row arithmetic of the batcher (serving/batching/rows.py)."""
from __future__ import annotations

import numpy as np
import pytest

from serving.batching.rows import (
    BatchShapeError,
    allowed_size,
    concat,
    first_rows,
    merge_key,
    pad_rows,
    slice_rows,
    split_rows,
)


def tensors(*values) -> dict[str, np.ndarray]:
    x = np.array(values, dtype=np.float32)
    return {"x": x, "s": np.array([str(v).encode() for v in values], dtype=object)}


def test_concat_then_split_gives_each_part_back():
    parts = [tensors(1, 2), tensors(3), tensors(4, 5, 6)]
    merged = concat(parts)
    np.testing.assert_array_equal(merged["x"], [1, 2, 3, 4, 5, 6])
    for original, back in zip(parts, split_rows(merged, [2, 1, 3])):
        np.testing.assert_array_equal(original["x"], back["x"])
        assert list(original["s"]) == list(back["s"])


def test_concat_of_one_part_is_not_copied():
    part = tensors(1, 2)
    assert concat([part]) is part


def test_split_refuses_outputs_that_lost_rows():
    with pytest.raises(BatchShapeError, match="expected 3 rows"):
        split_rows({"y": np.zeros(2)}, [1, 2])
    with pytest.raises(BatchShapeError):
        split_rows({"y": np.float32(1.0)}, [1])


def test_pad_repeats_the_last_row_and_first_rows_cuts_it():
    padded = pad_rows(tensors(1, 2, 3), 3, 8)
    np.testing.assert_array_equal(padded["x"], [1, 2, 3, 3, 3, 3, 3, 3])
    np.testing.assert_array_equal(first_rows(padded, 3)["x"], [1, 2, 3])


def test_allowed_size_picks_the_smallest_that_fits():
    assert allowed_size(3, (2, 4, 8)) == 4
    assert allowed_size(8, (2, 4, 8)) == 8
    assert allowed_size(5, ()) == 5


def test_merge_key_separates_dtypes_and_row_shapes_not_row_counts():
    assert merge_key(tensors(1)) == merge_key(tensors(1, 2, 3))
    assert merge_key({"x": np.zeros((1, 2))}) != merge_key({"x": np.zeros((1, 3))})
    assert merge_key({"x": np.zeros(1, np.float32)}) != merge_key({"x": np.zeros(1, np.float64)})


def test_slice_rows_is_a_view():
    t = tensors(1, 2, 3)
    assert slice_rows(t, 1, 3)["x"].base is t["x"]
