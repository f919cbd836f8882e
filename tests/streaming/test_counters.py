"""The streaming job's dead-letter counter, on Beam's local batch runner (no Pub/Sub: the
local streaming runner's counters are incomplete)."""
from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.metrics import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from batch.chunks import DEAD_LETTER
from batch.model_handler import ModelLocation
from serving.examples import natality
from streaming.pipeline import NAMESPACE, DecodeMessage, StreamJob


def test_messages_refused_at_decoding_are_counted(models_dir):
    columns = natality.sample_rows(1, seed=3)
    good = {k: v.tolist()[0] for k, v in columns.items()}
    bodies = [b"not json", b"[]", json.dumps({"id": 1, "is_male": "True"}).encode(), json.dumps(good).encode()]
    job = StreamJob(output_topic="projects/p/topics/out", dead_letter_topic="projects/p/topics/dead",
                    model=ModelLocation(str(models_dir / "natality")))
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    _ = (pipeline | beam.Create([PubsubMessage(body, {}) for body in bodies])
         | beam.ParDo(DecodeMessage(job)).with_outputs(DEAD_LETTER, main="chunks"))
    result = pipeline.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query(
        MetricsFilter().with_namespace(NAMESPACE))["counters"]}
    assert counters == {"messages_dead_lettered": 3}
