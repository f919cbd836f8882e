"""The streaming job builds for Dataflow offline (--dry_run) through streaming/run.py."""
from __future__ import annotations

from google.cloud import dataflow_v1beta3

from streaming.run import main


def test_dataflow_streaming_job_builds_offline():
    result = main([
        "--input_subscription", "projects/demo-project/subscriptions/in",
        "--output_topic", "projects/demo-project/topics/out",
        "--dead_letter_topic", "projects/demo-project/topics/dead",
        "--model_base_path", "gs://bucket/models/natality",
        "--runner=DataflowRunner", "--dry_run=True", "--no_auth", "--sdk_location=container",
        "--project=demo-project", "--region=us-central1", "--temp_location=gs://bucket/tmp",
        "--sdk_container_image=us-docker.pkg.dev/demo/tf-gateway/beam-worker:latest",
    ])
    job = result.job
    assert job.proto.type == dataflow_v1beta3.JobType.JOB_TYPE_STREAMING
    steps = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    assert {"Read", "Decode", "Predict", "Format", "Write", "WriteDead"} <= steps
