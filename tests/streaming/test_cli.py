"""``streaming/run.py`` as a user runs it: a subprocess, its exit status and what it prints."""
from __future__ import annotations

import pytest

from tests.batch.test_cli import IMAGE, run_cli

DRY_RUN = [
    "--input_subscription", "projects/demo-project/subscriptions/in",
    "--output_topic", "projects/demo-project/topics/out", "--dead_letter_topic", "projects/demo-project/topics/dead",
    "--model_base_path", "gs://b/models/natality",
    "--runner=DataflowRunner", "--project=demo-project", "--region=us-central1", "--temp_location=gs://bucket/tmp",
    f"--sdk_container_image={IMAGE}", "--dry_run=True", "--no_auth", "--sdk_location=container",
]


@pytest.mark.slow
def test_a_dry_run_ends_cleanly_and_says_what_it_built():
    done = run_cli("streaming/run.py", [*DRY_RUN, "--max_num_workers=2", "--enable_streaming_engine"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    said = done.stdout
    assert "Dry run: built Dataflow job" in said and "JOB_TYPE_STREAMING" in said, said
    assert IMAGE in said and "Nothing was submitted" in said
    for step in ("Read", "Decode", "Predict", "Format", "Write", "WriteDead"):
        assert step in said


@pytest.mark.slow
def test_a_misspelled_job_flag_is_refused():
    done = run_cli("streaming/run.py", [*DRY_RUN, "--max_wait_msec=5"])
    assert done.returncode == 2, done.stderr[-3000:]
    assert "unrecognized arguments" in done.stderr and "--max_wait_msec=5" in done.stderr
    assert "Traceback" not in done.stderr
