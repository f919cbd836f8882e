"""The batch enrichment pipeline: read rows, decode them in chunks, RunInference, write.

    read (JSON lines) -> chunks of rows -> decode to the signature's inputs (refused rows
    -> dead letters) -> RunInference(SavedModelHandler) (failed rows -> dead letters) ->
    one output line per row: its key (or whole input), the outputs, the model version.

Rows in = rows written + rows dead-lettered; Beam counters in the ``tfgw_batch``
namespace count each.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import apache_beam as beam
import orjson
from apache_beam.ml.inference.base import RunInference
from apache_beam.metrics import Metrics

from serving.runtime.beam_handler import ChunkResult, SavedModelHandler
from serving.runtime.columns import rows_to_chunk
from serving.runtime.signature import SignatureSpec

NAMESPACE = "tfgw_batch"
REFUSED = "refused"


@dataclass(frozen=True)
class BatchJob:
    """What one run reads, with which model, and where it writes."""

    input: str
    output: str
    version_path: str
    version: int
    signature: SignatureSpec
    key_field: str | None = None
    chunk_rows: int = 2048


class DecodeJsonLines(beam.DoFn):
    """A list of JSON lines -> one Chunk; lines that are not valid rows -> dead letters."""

    def __init__(self, signature: SignatureSpec, key_field: str | None) -> None:
        self._signature = signature
        self._key_field = key_field
        self._rows_in = Metrics.counter(NAMESPACE, "rows_in")
        self._refused = Metrics.counter(NAMESPACE, "rows_dead_lettered")

    def process(self, lines: list[str]) -> Iterable[Any]:
        rows, refused = [], []
        for line in lines:
            try:
                rows.append(orjson.loads(line))
            except orjson.JSONDecodeError as error:
                refused.append(_dead_letter(line, f"not JSON: {error}"))
        chunk, bad_rows = rows_to_chunk(rows, self._signature, self._key_field)
        refused += [_dead_letter(row, reason) for row, reason in bad_rows]
        self._rows_in.inc(len(lines))
        self._refused.inc(len(refused))
        for record in refused:
            yield beam.pvalue.TaggedOutput(REFUSED, record)
        if len(chunk):
            yield chunk


class FormatResults(beam.DoFn):
    """A ChunkResult -> one text element of output lines, and dead letters for failed rows."""

    def __init__(self, key_field: str | None) -> None:
        self._key_field = key_field
        self._written = Metrics.counter(NAMESPACE, "rows_written")
        self._failed = Metrics.counter(NAMESPACE, "rows_dead_lettered")

    def process(self, result: ChunkResult) -> Iterable[Any]:
        chunk = result.chunk
        for row, reason in result.failures:
            yield beam.pvalue.TaggedOutput(REFUSED, _dead_letter(chunk.passthrough[row], f"inference failed: {reason}"))
        self._failed.inc(len(result.failures))
        if result.outputs is None:
            return
        columns = {name: list(values) for name, values in result.outputs.items()}  # numpy scalars:
        lines = []                                                                  # float32 prints short
        for i, row in enumerate(result.ok_rows):
            carried = chunk.passthrough[row]
            record = {self._key_field: carried[self._key_field]} if self._key_field else dict(carried)
            for name, values in columns.items():
                record[name] = values[i]
            record["model_version"] = result.model_version
            lines.append(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY).decode())
        self._written.inc(len(lines))
        if lines:
            yield "\n".join(lines)


def _dead_letter(record: Any, reason: str) -> str:
    return orjson.dumps({"input": record, "error": reason}, default=str).decode()


def build(pipeline: beam.Pipeline, job: BatchJob) -> None:
    """Add the job's transforms to ``pipeline``."""
    lines = pipeline | "Read" >> beam.io.ReadFromText(job.input)
    chunks = lines | "Chunk" >> beam.BatchElements(min_batch_size=job.chunk_rows, max_batch_size=job.chunk_rows)
    decoded = chunks | "Decode" >> beam.ParDo(DecodeJsonLines(job.signature, job.key_field)).with_outputs(
        REFUSED, main="chunks")
    handler = SavedModelHandler(job.version_path, job.version, job.signature.name)
    results = decoded.chunks | "Predict" >> RunInference(handler)
    formatted = results | "Format" >> beam.ParDo(FormatResults(job.key_field)).with_outputs(REFUSED, main="lines")
    formatted.lines | "Write" >> beam.io.WriteToText(job.output, file_name_suffix=".jsonl")
    ((decoded[REFUSED], formatted[REFUSED]) | "DeadLetters" >> beam.Flatten()
     | "WriteErrors" >> beam.io.WriteToText(job.output + "-errors", file_name_suffix=".jsonl"))
