"""The batch job builds for Dataflow offline (--dry_run): nothing on gs:// is touched."""
from __future__ import annotations

import socket

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2
from google.cloud import dataflow_v1beta3

from batch.model_handler import ModelLocation
from batch.pipeline import BatchJob, build

IMAGE = "us-docker.pkg.dev/demo/tf-gateway/beam-worker:latest"
DRY_RUN = ["--runner=DataflowRunner", "--dry_run=True", "--no_auth", "--sdk_location=container",
           "--project=demo", "--region=us-central1", "--temp_location=gs://bucket/tmp",
           f"--sdk_container_image={IMAGE}"]
"""A Dataflow job built offline and not submitted."""


def test_dataflow_job_builds_offline_with_gs_paths():
    pipeline = beam.Pipeline(options=PipelineOptions(DRY_RUN))
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


def test_a_job_that_writes_a_prediction_store_builds_without_connecting_to_it():
    """The store is opened in the writer's setup, on the workers: building the job must
    not touch it. It is pointed at a socket that listens but is never accepted from, so a
    connection attempt would wait in its backlog and show."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        store = f"redis://:s3cr3t@127.0.0.1:{listener.getsockname()[1]}/0"
        pipeline = beam.Pipeline(options=PipelineOptions(DRY_RUN))
        build(pipeline, BatchJob("gs://bucket/in/*.jsonl", "gs://bucket/out/pred",
                                 ModelLocation("gs://bucket/models/natality", model_name="natality"),
                                 key_field="id", prediction_store=store))
        job = pipeline.run().job
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing connected
    steps = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    assert {"Predict", "Store", "Format", "Write", "WriteErrors"} <= steps
