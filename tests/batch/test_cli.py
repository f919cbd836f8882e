"""``batch/run.py`` as a user runs it: a subprocess, its exit status and what it prints."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from batch.job_options import unknown_beam_args
from tests.conftest import REPO

IMAGE = "us-docker.pkg.dev/demo/tf-gateway/beam-worker:latest"
HEADLINE = [  # the README's Dataflow command, offline
    "--input", "gs://b/in/*.jsonl", "--output", "gs://b/out/pred", "--model_base_path", "gs://b/models/natality",
    "--runner=DataflowRunner", "--project=demo", "--region=us-central1", "--temp_location=gs://bucket/tmp",
    f"--sdk_container_image={IMAGE}", "--dry_run=True", "--no_auth", "--sdk_location=container",
]


def run_cli(script: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


@pytest.mark.slow
def test_a_dry_run_ends_cleanly_and_says_what_it_built():
    # Real Beam options beside the job's own pass through (Dataflow's, the direct runner's).
    # With a prediction store (Memorystore's address: nothing there is reached while building).
    done = run_cli("batch/run.py", [*HEADLINE, "--max_num_workers=3", "--machine_type", "n1-standard-2",
                                    "--experiments=use_runner_v2", "--direct_num_workers=2",
                                    "--key_field", "id", "--prediction_store", "redis://10.0.0.3:6379/0"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    said = done.stdout
    assert "Dry run: built Dataflow job" in said and "JOB_TYPE_BATCH" in said, said
    assert "project demo, region us-central1" in said and IMAGE in said and "Nothing was submitted" in said
    for step in ("Match", "Decode", "Predict", "Store", "Format", "Write", "WriteErrors"):
        assert step in said


def test_a_store_url_that_does_not_parse_is_refused_without_showing_its_password():
    done = run_cli("batch/run.py", [*HEADLINE, "--key_field", "id",
                                    "--prediction_store", "redis://admin:hunter2-pw@10.0.0.3:6379x/0"])
    assert done.returncode == 2, done.stderr[-3000:]
    assert "--prediction_store" in done.stderr and "the port must be a number" in done.stderr, done.stderr
    assert "admin:***@" in done.stderr and "hunter2-pw" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_misspelled_job_flag_is_refused():
    done = run_cli("batch/run.py", [*HEADLINE, "--prediction_servce", "gateway:8500"])
    assert done.returncode == 2, done.stderr[-3000:]
    assert "unrecognized arguments" in done.stderr and "--prediction_servce" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args", [
    ["--runner=DataflowRunner"], ["--project", "p"], ["--temp_location=gs://b/tmp"], ["--direct_num_workers=2"],
    ["--direct_running_mode", "multi_processing"], ["--streaming"], ["--save_main_session"],
    ["--experiments=a", "--experiments=b"], ["--sdk_container_image=i", "--dry_run=True", "--no_auth"],
])
def test_beams_own_options_are_known(args):
    assert unknown_beam_args(args) == []


@pytest.mark.parametrize("args,unknown", [
    (["--prediction_servce", "h:1"], ["--prediction_servce", "h:1"]),
    (["--runer=DataflowRunner"], ["--runer=DataflowRunner"]),
    (["--proj=p"], ["--proj=p"]),  # no abbreviations: Beam's parser takes none either
    (["stray"], ["stray"]),
])
def test_anything_else_is_unknown(args, unknown):
    assert unknown_beam_args(args) == unknown
