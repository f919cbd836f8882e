"""SavedModelHandler: one model call per batch of chunks, each chunk gets its own rows back."""
from __future__ import annotations

import logging

import numpy as np

from batch.chunks import Chunk, rows_to_chunk
from batch.model_handler import ModelLocation, SavedModelHandler, VersionedModel
from serving.examples import natality


class Counting:
    """The real model, counting its calls."""

    def __init__(self, model) -> None:
        self.model, self.calls = model, 0

    def signature(self, name):
        return self.model.signature(name)

    def run(self, name, inputs, deadline=None):
        self.calls += 1
        return self.model.run(name, inputs, deadline)


def chunks(spec, *sizes: int, bad: tuple[int, int] | None = None) -> list[Chunk]:
    columns = natality.sample_rows(sum(sizes), seed=17)
    rows = [{k: v.tolist()[i] for k, v in columns.items()} for i in range(sum(sizes))]
    result, start = [], 0
    for index, size in enumerate(sizes):
        part = rows[start:start + size]
        if bad and bad[0] == index:
            part[bad[1]] = {**part[bad[1]], "is_male": "maybe"}
        result.append(rows_to_chunk(part, spec)[0])
        start += size
    return result


def test_chunks_of_a_batch_share_one_call_and_get_their_own_rows(models_dir):
    handler = SavedModelHandler(ModelLocation(str(models_dir / "natality")), chunks_per_call=8)
    loaded = handler.load_model()
    model = Counting(loaded.model)
    spec = model.signature("serving_default")
    batch = chunks(spec, 3, 2, 1)
    results = list(handler.run_inference(batch, VersionedModel(loaded.version, model)))
    assert model.calls == 1
    for chunk, result in zip(batch, results):
        assert result.chunk is chunk and result.ok_rows == list(range(len(chunk)))
        alone = model.run("serving_default", chunk.tensors)["weight_pounds"]
        np.testing.assert_allclose(result.outputs["weight_pounds"], alone, rtol=1e-6)


def test_a_failing_row_fails_alone(models_dir):
    handler = SavedModelHandler(ModelLocation(str(models_dir / "natality")), chunks_per_call=8)
    model = handler.load_model()
    batch = chunks(model.model.signature("serving_default"), 3, 2, 1, bad=(1, 1))
    first, second, third = handler.run_inference(batch, model)
    assert first.ok_rows == [0, 1, 2] and first.failures == []
    assert second.ok_rows == [0] and [row for row, _ in second.failures] == [1]
    assert "maybe" in second.failures[0][1]
    assert second.outputs["weight_pounds"].shape == (1,)
    assert third.ok_rows == [0]


def test_streaming_batches_wait_at_most_max_wait(models_dir):
    handler = SavedModelHandler(ModelLocation(str(models_dir / "natality")), chunks_per_call=64,
                                max_wait_s=0.005)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 1, "max_batch_size": 64,
                                               "max_batch_duration_secs": 0.005}


def test_the_model_runs_in_a_session_unless_the_job_says_otherwise(models_dir):
    from batch.run import parse

    base = str(models_dir / "shapes" / "vec16")
    assert SavedModelHandler(ModelLocation(base)).load_model().model.in_session is True
    assert SavedModelHandler(ModelLocation(base, tf2_session=False)).load_model().model.in_session is False
    flags = ["--input=i", "--output=o", f"--model_base_path={base}"]
    assert parse(flags)[0].tf2_session is True
    assert parse([*flags, "--tf2_session=false"])[0].tf2_session is False


def test_the_log_says_which_runner_serves_and_why(models_dir, caplog):
    """The pipelines choose at load (no live traffic to compare on) and say so."""
    caplog.set_level(logging.INFO, logger="batch.model_handler")
    SavedModelHandler(ModelLocation(str(models_dir / "shapes" / "vec16"), model_name="logged")).load_model()
    SavedModelHandler(ModelLocation(str(models_dir / "natality"), model_name="logged")).load_model()
    logged = [r.getMessage() for r in caplog.records if r.name == "batch.model_handler"]
    assert logged == [
        f"{models_dir / 'shapes' / 'vec16'} version 1 runner: session (evidence: synthetic): its 2 synthetic "
        "warm-up requests were answered alike by the TF1 Session",
        f"{models_dir / 'natality'} version 1 runner: session (evidence: warmup_file): its 4 recorded "
        "warm-up requests were answered alike by the TF1 Session"]
