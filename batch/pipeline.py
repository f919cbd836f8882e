"""The batch enrichment pipeline: read rows, decode them in chunks, RunInference, write.

    match files -> blocks of rows -> decode column-wise to the signature's inputs
    (refused rows -> dead letters) -> RunInference(SavedModelHandler) (failed rows ->
    dead letters) -> [with a prediction store: each chunk's rows in the store, rows with
    bad keys -> dead letters (``batch.store_writer``)] -> one output line per row: its key
    (or whole input), the outputs, the model version. Files are the unit of parallelism
    (each is read by one worker).

Rows in = rows written + rows dead-lettered (and rows stored = rows written when the job
writes a store); Beam counters in the ``tfgw_batch`` namespace count each, and one counter
per kind of reason in ``tfgw_batch_dead_letters`` counts the dead letters again by why
(``batch.chunks.reason_kind``). Dead letters travel as (row, reason) to the one step that
counts them and writes each as a line (``CountDeadLetters``).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.metrics import Metrics, MetricsFilter
from apache_beam.ml.inference.base import RunInference

from batch.chunks import DEAD_LETTER, ChunkResult, dead_letter_text, reason_kind
from batch.columnar import Decoded, decode_block, decode_table, format_text, read_blocks
from batch.model_handler import ModelLocation, SavedModelHandler, open_model
from batch.parquet_sink import ParquetSink, result_table
from batch.records import csv_blocks, decode_csv, decode_examples, tfrecord_blocks
from batch.report import JobCounts
from batch.store_writer import WriteToStore
from serving.runtime.signature import SignatureSpec

log = logging.getLogger(__name__)

NAMESPACE = "tfgw_batch"
REASONS_NAMESPACE = "tfgw_batch_dead_letters"
"""One counter per kind of dead-letter reason."""
DEAD_LETTER_SUFFIX = "-errors"


@dataclass(frozen=True)
class BatchJob:
    """What one run reads, with which model, and where it writes."""

    input: str
    output: str
    model: ModelLocation
    signature_name: str = "serving_default"
    key_field: str | None = None
    chunk_rows: int = 2048
    input_format: str = "jsonl"  # or "parquet", "csv", "tfrecord" (of tf.Example)
    output_format: str = "jsonl"  # or "parquet"
    prediction_store: str | None = None
    """Also write each row's outputs here (a store URL), under (model.model_name, the
    version that ran, the row's ``key_field``)."""

    def __post_init__(self) -> None:
        if self.prediction_store and not self.key_field:
            raise ValueError("A job that writes a prediction store needs a key field (the key of each row)")

    @property
    def dead_letter_files(self) -> str:
        """Where rows that failed go, each with its input and reason (a file pattern)."""
        return f"{self.output}{DEAD_LETTER_SUFFIX}-*.jsonl"


DECODERS: dict[str, Callable[[Any, SignatureSpec, str | None], Decoded]] = {
    "jsonl": decode_block, "parquet": decode_table, "csv": decode_csv, "tfrecord": decode_examples}
"""Input format -> the decoder of one block (JSON lines, a row group, CSV lines, tf.Examples)."""


BLOCKS: dict[str, Callable[[Any, int], Iterable[Any]]] = {
    "jsonl": read_blocks, "csv": csv_blocks, "tfrecord": tfrecord_blocks}
"""Input format (but Parquet's, which Beam reads in row groups) -> the reader of a file's blocks."""


class ReadBlocks(beam.DoFn):
    """A matched file -> its rows in blocks: JSON lines, CSV lines with the header, tf.Examples."""

    def __init__(self, input_format: str, rows_per_block: int) -> None:
        self._format = input_format
        self._rows = rows_per_block

    def process(self, readable_file: Any) -> Iterable[Any]:
        with readable_file.open() as handle:
            yield from BLOCKS[self._format](handle, self._rows)


class Decode(beam.DoFn):
    """A block of rows (JSON lines, a Parquet row group, CSV lines, tf.Examples) -> one
    Chunk, decoded column-wise; rows that are not valid inputs -> dead letters, each alone."""

    PROGRESS_EVERY = 200_000

    def __init__(self, job: BatchJob) -> None:
        self._job = job
        self._signature: SignatureSpec | None = None
        self._seen = 0
        self._rows_in = Metrics.counter(NAMESPACE, "rows_in")

    def setup(self) -> None:
        """Open the model on the worker (building the job must not touch it); shared with
        RunInference's handler in this process."""
        _, model = open_model(self._job.model)
        self._signature = model.signature(self._job.signature_name)

    def process(self, block: Any) -> Iterable[Any]:
        spec, key_field = self._signature, self._job.key_field
        assert spec is not None
        decode = DECODERS[self._job.input_format]
        chunk, refused = decode(block, spec, key_field)
        rows = block.num_rows if self._job.input_format == "parquet" else len(block)
        before, self._seen = self._seen, self._seen + rows
        if before // self.PROGRESS_EVERY != self._seen // self.PROGRESS_EVERY:
            log.info("decoded %d rows in this worker", self._seen)
        self._rows_in.inc(rows)
        for refusal in refused:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, refusal)
        if len(chunk):
            yield chunk


class FormatResults(beam.DoFn):
    """A ChunkResult -> one output element (a text of lines, or a pyarrow table), and dead
    letters for failed rows."""

    def __init__(self, key_field: str | None, output_format: str) -> None:
        self._key_field = key_field
        self._format = output_format
        self._written = Metrics.counter(NAMESPACE, "rows_written")

    def process(self, result: ChunkResult) -> Iterable[Any]:
        for row, reason in result.failures:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, (result.chunk.passthrough[row], f"inference failed: {reason}"))
        if result.outputs is None or not result.ok_rows:
            return
        self._written.inc(len(result.ok_rows))
        if self._format == "parquet":
            yield result_table(result, self._key_field)
            return
        yield format_text(result.chunk, result.ok_rows, result.outputs, result.model_version, self._key_field)


class CountDeadLetters(beam.DoFn):
    """(row as read, reason) -> the dead letter's line; the one place dead letters are
    counted: ``rows_dead_lettered``, and by ``reason_kind`` in ``REASONS_NAMESPACE``."""

    def __init__(self) -> None:
        self._dead = Metrics.counter(NAMESPACE, "rows_dead_lettered")

    def process(self, dead_letter: tuple[Any, str]) -> Iterable[str]:
        row, reason = dead_letter
        self._dead.inc()
        Metrics.counter(REASONS_NAMESPACE, reason_kind(reason)).inc()
        yield dead_letter_text(row, reason)


def build(pipeline: beam.Pipeline, job: BatchJob) -> None:
    """Add the job's transforms to ``pipeline``."""
    if job.input_format == "parquet":
        blocks = pipeline | "Read" >> beam.io.ReadFromParquetBatched(job.input, validate=False)
    else:
        blocks = (pipeline
                  | "Match" >> fileio.MatchFiles(job.input)
                  | "Open" >> fileio.ReadMatches()
                  | "Reshuffle" >> beam.Reshuffle()  # spread files over workers
                  | "ReadBlocks" >> beam.ParDo(ReadBlocks(job.input_format, job.chunk_rows)))
    decoded = blocks | "Decode" >> beam.ParDo(Decode(job)).with_outputs(DEAD_LETTER, main="chunks")
    handler = SavedModelHandler(job.model, job.signature_name)
    results = decoded.chunks | "Predict" >> RunInference(handler)
    dead_letters = [decoded[DEAD_LETTER]]
    if job.prediction_store:
        assert job.key_field  # BatchJob checks it
        stored = results | "Store" >> beam.ParDo(WriteToStore(
            job.prediction_store, job.model.model_name, job.key_field, NAMESPACE)).with_outputs(
            DEAD_LETTER, main="results")
        results = stored.results
        dead_letters.append(stored[DEAD_LETTER])
    formatted = results | "Format" >> beam.ParDo(FormatResults(job.key_field, job.output_format)).with_outputs(
        DEAD_LETTER, main="rows")
    dead_letters.append(formatted[DEAD_LETTER])
    if job.output_format == "parquet":
        directory, prefix = job.output.rsplit("/", 1) if "/" in job.output else (".", job.output)
        formatted.rows | "Write" >> fileio.WriteToFiles(
            directory, file_naming=fileio.default_file_naming(prefix, ".parquet"), sink=lambda _: ParquetSink())
    else:
        formatted.rows | "Write" >> beam.io.WriteToText(job.output, file_name_suffix=".jsonl")
    (tuple(dead_letters) | "DeadLetters" >> beam.Flatten()
     | "CountDeadLetters" >> beam.ParDo(CountDeadLetters())
     | "WriteErrors" >> beam.io.WriteToText(job.output + DEAD_LETTER_SUFFIX, file_name_suffix=".jsonl"))


def job_counts(result: Any, job: BatchJob) -> JobCounts:
    """A finished run's counters (committed where the runner has them, else attempted)."""
    def totals(namespace: str) -> dict[str, int]:
        found: dict[str, int] = {}
        for counter in result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]:
            name = counter.key.metric.name
            found[name] = found.get(name, 0) + (counter.committed or counter.attempted or 0)
        return found

    rows = totals(NAMESPACE)
    return JobCounts(rows.get("rows_in", 0), rows.get("rows_written", 0), rows.get("rows_dead_lettered", 0),
                     rows.get("rows_stored", 0) if job.prediction_store else None, totals(REASONS_NAMESPACE))
