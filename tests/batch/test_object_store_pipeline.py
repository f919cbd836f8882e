"""The pipelines' model on gs:// and s3://, against real emulators the tests start (a GCS
emulator and moto's S3 server, each on a free loopback port), and the handler's
process-level model cache evicting the versions it no longer serves."""
from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from batch.chunks import Chunk
from batch.model_handler import ModelLocation, SavedModelHandler, cached_versions
from batch.run import main
from serving.examples import natality
from tests.batch.test_pipeline import expected, read_jsonl, write_rows
from tests.runtime.test_object_stores import HALF_PLUS_THREE, HALF_PLUS_TWO, cached_copies


@pytest.mark.slow
def test_batch_run_loads_the_model_from_the_bucket(store, store_env, tmp_path, models_dir):
    bucket = store.bucket()
    store.upload_dir(models_dir / "natality" / "1", f"{bucket}/natality/3")
    rows = write_rows(tmp_path / "in.jsonl", 300)
    counts = main(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out" / "pred"),
                   "--model_base_path", f"{bucket}/natality", "--key_field", "id"])
    assert counts["rows_written"] == len(rows)
    records = read_jsonl(str(tmp_path / "out" / "pred-0*"))
    assert sorted(r["id"] for r in records) == sorted(rows)
    for record in records:
        assert record["model_version"] == 3
        assert abs(record["weight_pounds"] - expected(rows[record["id"]])) < natality.TOLERANCE_POUNDS


@pytest.mark.slow
def test_the_model_cache_evicts_the_version_it_no_longer_serves(store, store_env, tfserving_dir):
    """A streaming-style handler (checks for new versions) moves from version 1 to 2 of a
    bucket: the cache then holds version 2 only, version 1 is freed and its copy removed."""
    bucket = store.bucket()
    location = ModelLocation(f"{bucket}/hp")
    store.upload_dir(tfserving_dir / HALF_PLUS_TWO, f"{bucket}/hp/1")
    handler = SavedModelHandler(location, refresh_s=0.0)
    loaded = handler.load_model()
    chunk = Chunk({"x": np.array([[1.0], [2.0], [5.0]], dtype=np.float32)}, [None] * 3)
    (result,) = handler.run_inference([chunk], loaded)
    assert result.model_version == 1
    np.testing.assert_allclose(result.outputs["y"].ravel(), [2.5, 3.0, 4.5])
    assert cached_versions()[location] == 1
    first = weakref.ref(loaded.model)
    first_copy = cached_copies(store_env)
    assert len(first_copy) == 1

    store.upload_dir(tfserving_dir / HALF_PLUS_THREE, f"{bucket}/hp/2")
    (result,) = handler.run_inference([chunk], loaded)
    assert result.model_version == 2
    np.testing.assert_allclose(result.outputs["y"].ravel(), [3.5, 4.0, 5.5])
    assert {v for loc, v in cached_versions().items() if loc.base_path == location.base_path} == {2}
    # a handler made afterwards (Beam re-creates DoFns) starts on version 2, loaded once
    assert SavedModelHandler(location).load_model().version == 2

    del loaded, result  # what Beam held for the first DoFn
    gc.collect()
    assert first() is None, "version 1 is still referenced"
    copies = cached_copies(store_env)
    assert len(copies) == 1 and copies != first_copy
