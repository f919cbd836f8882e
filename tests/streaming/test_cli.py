"""``streaming/run.py`` as a user runs it: a subprocess, its exit status and what it prints."""
from __future__ import annotations

import pytest

from streaming.run import main
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
    assert ("INFO streaming: reading projects/demo-project/subscriptions/in; answers to projects/demo-project/"
            "topics/out; dead letters (the reason in their 'error' attribute) to projects/demo-project/topics/dead"
            ) in done.stderr, done.stderr[-3000:]


@pytest.mark.slow
def test_a_misspelled_job_flag_is_refused():
    done = run_cli("streaming/run.py", [*DRY_RUN, "--max_wait_msec=5"])
    assert done.returncode == 2, done.stderr[-3000:]
    assert "unrecognized arguments" in done.stderr and "--max_wait_msec=5" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("flags", [["--model_base_pth=/x"], ["--dead_letter_topc", "projects/p/topics/d"]])
def test_an_unknown_flag_is_named_even_where_a_required_one_is_missing(flags, capsys):
    with pytest.raises(SystemExit) as exited:
        main([*flags, "--input_subscription", "projects/p/subscriptions/in", "--output_topic", "projects/p/topics/o"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"unrecognized arguments (neither this job's nor Beam's options): {' '.join(flags)}" in err, err
    assert "required" not in err


@pytest.mark.parametrize("flag", ["--fail_on_dead_letters", "--max_dead_letter_fraction=0.1"])
def test_the_batch_jobs_dead_letter_bar_is_refused_by_name(flag, capsys):
    with pytest.raises(SystemExit) as exited:
        main([*DRY_RUN, flag])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--fail_on_dead_letters and --max_dead_letter_fraction are the batch job's" in err, err
    assert "--dead_letter_topic" in err
