"""bench_answers times what it claims: each case carries every value both ways."""
from __future__ import annotations

import pytest
from tensorflow_serving.apis import predict_pb2

from loadtests.benchmarks import bench_answers


@pytest.mark.parametrize("model", bench_answers.MODELS)
def test_each_case_round_trips_and_answers_both_forms(model):
    arrays = bench_answers.outputs(model, 64)
    bench_answers.check(arrays)
    fields = predict_pb2.PredictResponse.FromString(bench_answers.answer(arrays, content=False)())
    content = predict_pb2.PredictResponse.FromString(bench_answers.answer(arrays, content=True)())
    assert all(not t.tensor_content for t in fields.outputs.values())
    assert all(t.tensor_content for t in content.outputs.values())
