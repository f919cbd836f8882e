"""Pub/Sub -> SavedModel -> Pub/Sub, with a dead-letter topic.

Each message holds a JSON row or a list of rows. Messages are decoded with the batch
pipeline's row decoding, minibatched across messages by RunInference (one model call for
the messages Beam gathers within ``max_wait_s``), and answered one for one: every input
message yields exactly one output message or one dead-letter message (with the reason in
its ``error`` attribute). Attributes are carried over, plus ``input_message_id`` and
``model_version``.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference

from batch.chunks import DEAD_LETTER, ChunkResult, rows_to_chunk
from batch.columnar import json_default
from batch.model_handler import ModelLocation, SavedModelHandler, open_model
from serving.runtime.signature import SignatureSpec

NAMESPACE = "tfgw_streaming"


@dataclass(frozen=True)
class StreamJob:
    output_topic: str
    dead_letter_topic: str
    model: ModelLocation
    input_subscription: str | None = None
    input_topic: str | None = None
    signature_name: str = "serving_default"
    max_wait_s: float | None = 0.01
    messages_per_call: int = 256
    refresh_interval_s: float = 60.0  # how often base_path is checked for new versions; 0: never


@dataclass(frozen=True)
class Origin:
    """What each row of a message carries to the answer: the message, and how to shape it."""

    message: PubsubMessage
    listed: bool  # the message held a list of rows (answer with a list)
    key: Any = None  # the row's "id", when a single row had one


class DecodeMessage(beam.DoFn):
    """A message -> a Chunk of its rows (each carrying the message); bad ones -> dead letters."""

    def __init__(self, job: StreamJob) -> None:
        self._job = job
        self._signature: SignatureSpec | None = None
        self._dead = Metrics.counter(NAMESPACE, "messages_dead_lettered")

    def setup(self) -> None:
        _, model = open_model(self._job.model)
        self._signature = model.signature(self._job.signature_name)

    def process(self, message: PubsubMessage) -> Iterable[Any]:
        assert self._signature is not None
        try:
            doc = orjson.loads(message.data)
        except orjson.JSONDecodeError as error:
            yield self._refuse(message, f"not JSON: {error}")
            return
        rows = doc if isinstance(doc, list) else [doc]
        if not rows:
            yield self._refuse(message, "no rows")
            return
        key = doc.get("id") if isinstance(doc, dict) else None
        origin = Origin(message, isinstance(doc, list), key)
        chunk, refused = rows_to_chunk(rows, self._signature, passthrough=[origin] * len(rows))
        if refused:
            yield self._refuse(message, refused[0][1])
            return
        yield chunk

    def _refuse(self, message: PubsubMessage, reason: str) -> beam.pvalue.TaggedOutput:
        """The message's dead letter, counted."""
        self._dead.inc()
        return beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(message, reason))


class FormatMessage(beam.DoFn):
    """A message's result -> its output message, or a dead letter if a row failed."""

    def __init__(self) -> None:
        self._out = Metrics.counter(NAMESPACE, "messages_out")
        self._dead = Metrics.counter(NAMESPACE, "messages_dead_lettered")

    def process(self, result: ChunkResult) -> Iterable[Any]:
        origin: Origin = result.chunk.passthrough[0]
        message = origin.message
        if result.failures or result.outputs is None:
            self._dead.inc()
            reason = result.failures[0][1] if result.failures else "no output"
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(message, f"inference failed: {reason}"))
            return
        columns = {name: list(values) for name, values in result.outputs.items()}
        rows = [{name: values[i] for name, values in columns.items()} for i in range(len(result.ok_rows))]
        body = {"predictions": rows if origin.listed else rows[0], "model_version": result.model_version}
        if origin.key is not None:
            body["id"] = origin.key
        attributes = {**(message.attributes or {}), "input_message_id": message.message_id or "",
                      "model_version": str(result.model_version)}
        self._out.inc()
        # String outputs are bytes: written as UTF-8 text, as the batch pipeline writes them.
        yield PubsubMessage(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY, default=json_default), attributes)


def dead_letter(message: PubsubMessage, reason: str) -> PubsubMessage:
    attributes = {**(message.attributes or {}), "input_message_id": message.message_id or "",
                  "error": reason[:1024]}
    return PubsubMessage(message.data, attributes)


def build(pipeline: beam.Pipeline, job: StreamJob) -> None:
    source = (beam.io.ReadFromPubSub(subscription=job.input_subscription, with_attributes=True)
              if job.input_subscription else beam.io.ReadFromPubSub(topic=job.input_topic, with_attributes=True))
    messages = pipeline | "Read" >> source
    decoded = messages | "Decode" >> beam.ParDo(DecodeMessage(job)).with_outputs(DEAD_LETTER, main="chunks")
    handler = SavedModelHandler(job.model, job.signature_name, chunks_per_call=job.messages_per_call,
                                max_wait_s=job.max_wait_s, refresh_s=job.refresh_interval_s or None)
    results = decoded.chunks | "Predict" >> RunInference(handler)
    formatted = results | "Format" >> beam.ParDo(FormatMessage()).with_outputs(DEAD_LETTER, main="out")
    formatted.out | "Write" >> beam.io.WriteToPubSub(job.output_topic, with_attributes=True)
    ((decoded[DEAD_LETTER], formatted[DEAD_LETTER]) | "DeadLetters" >> beam.Flatten()
     | "WriteDead" >> beam.io.WriteToPubSub(job.dead_letter_topic, with_attributes=True))
