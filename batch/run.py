"""``python batch/run.py --input PATTERN --output PREFIX --model_base_path DIR [Beam options]``

Enriches rows (JSON lines, Parquet, CSV or TFRecords of tf.Example) with a SavedModel's
predictions, written as JSON lines or Parquet. Any Beam pipeline option passes
through (``--runner DataflowRunner --project ... --region ... --temp_location gs://...``);
without ``--runner`` the fast local FnApiRunner is used.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from batch.job_options import beam_options, describe_dry_run, is_dry_run
from serving.logs import setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--input", required=True, help="file pattern (local or gs://)")
    parser.add_argument("--output", required=True, help="output prefix; dead letters go to PREFIX-errors-*")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--model_base_path", help="folder of numeric version folders (local or gs://)")
    where.add_argument("--prediction_service", metavar="HOST:PORT",
                       help="call this TF Serving PredictionService (e.g. the gateway) instead of "
                            "loading the model: the 'microservice' approach, for comparison")
    parser.add_argument("--model_name", default="default", help="the model's name at --prediction_service")
    parser.add_argument("--model_version", type=int, help="default: the newest")
    parser.add_argument("--signature_name", default="serving_default")
    parser.add_argument("--key_field", help="carry only this field to the output (default: the whole row)")
    parser.add_argument("--input_format", choices=["jsonl", "parquet", "csv", "tfrecord"], default="jsonl",
                        help="csv: with a header line; tfrecord: of tf.Example")
    parser.add_argument("--output_format", choices=["jsonl", "parquet"], default="jsonl")
    parser.add_argument("--chunk_rows", type=int, default=2048, help="rows per model call")
    return parser


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """This job's flags, and the rest (Beam's options)."""
    return build_parser().parse_known_args(argv)


def _options(parser: argparse.ArgumentParser, beam_args: list[str]) -> Any:
    if not any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        beam_args = ["--runner=FnApiRunner", *beam_args]
    return beam_options(parser, beam_args)


def main(argv: Sequence[str] | None = None) -> dict[str, int]:
    parser = build_parser()
    args, beam_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    options = _options(parser, beam_args)  # a flag neither this job nor Beam knows: exit 2
    setup_logging()
    import apache_beam as beam

    from batch.model_handler import ModelLocation
    from batch.pipeline import NAMESPACE, BatchJob, build

    model = ModelLocation(args.model_base_path, args.prediction_service, args.model_name, args.model_version)
    job = BatchJob(args.input, args.output, model, args.signature_name, args.key_field, args.chunk_rows,
                   args.input_format, args.output_format)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, job)
    result = pipeline.run()
    if is_dry_run(options):
        print(describe_dry_run(result, options), flush=True)
        return {}
    result.wait_until_finish()
    if getattr(result, "has_job", True) is False:
        # A Flex Template launcher runs this to write the job description: nothing ran here.
        logging.getLogger("batch").info("job description written; no job ran here to count")
        return {}
    counts = {name: 0 for name in ("rows_in", "rows_written", "rows_dead_lettered")}
    for counter in result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        counts[counter.key.metric.name] += counter.committed or counter.attempted or 0
    logging.getLogger("batch").info(
        "rows in: %d, written: %d, dead-lettered: %d", counts["rows_in"], counts["rows_written"],
        counts["rows_dead_lettered"])
    return counts


if __name__ == "__main__":
    main()
