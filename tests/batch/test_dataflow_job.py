"""The batch job builds for Dataflow offline (--dry_run): nothing on gs:// is touched."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2
from google.cloud import dataflow_v1beta3

from batch.model_handler import ModelLocation
from batch.pipeline import BatchJob, build

IMAGE = "us-docker.pkg.dev/demo/tf-gateway/beam-worker:latest"


def test_dataflow_job_builds_offline_with_gs_paths():
    options = PipelineOptions([
        "--runner=DataflowRunner", "--dry_run=True", "--no_auth", "--sdk_location=container",
        "--project=demo", "--region=us-central1", "--temp_location=gs://bucket/tmp",
        f"--sdk_container_image={IMAGE}",
    ])
    pipeline = beam.Pipeline(options=options)
    build(pipeline, BatchJob("gs://bucket/in/*.jsonl", "gs://bucket/out/pred",
                             ModelLocation("gs://bucket/models/natality"), key_field="id"))
    job = pipeline.run().job
    assert job.proto.type == dataflow_v1beta3.JobType.JOB_TYPE_BATCH
    graph = job.proto_pipeline
    steps = {t.unique_name for t in graph.components.transforms.values()}
    assert {"Match", "Decode", "Predict", "Format", "Write", "WriteErrors"} <= steps
    images = {beam_runner_api_pb2.DockerPayload.FromString(e.payload).container_image
              for e in graph.components.environments.values()}
    assert images == {IMAGE}
