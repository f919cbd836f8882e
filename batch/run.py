"""``python batch/run.py --input PATTERN --output PREFIX --model_base_path DIR [Beam options]``

Enriches rows (JSON lines, Parquet, CSV or TFRecords of tf.Example) with a SavedModel's
predictions, written as JSON lines or Parquet (and, with ``--prediction_store``, into a
store the gateway answers from). Any Beam pipeline option passes through (``--runner
DataflowRunner --project ... --region ... --temp_location gs://...``); without
``--runner`` the fast local FnApiRunner is used.

A run that the launcher waits for (local runners; ``--runner DataflowRunner`` too) ends with
a summary line on stderr, a WARNING if it dead-lettered rows, and exit status 3 if those
were more than ``--fail_on_dead_letters`` or ``--max_dead_letter_fraction`` allow
(``batch.report``); 2 is bad flags.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from batch.job_options import (
    add_tf2_session_flag,
    add_verbose_flag,
    beam_options,
    describe_dry_run,
    is_dry_run,
    parse_job_flags,
    quiet_tensorflow,
    setup_job_logging,
)
from batch.report import add_dead_letter_flags, tell
from serving.precomputed.urls import BadStoreUrl, RedisUrl, SqliteUrl, parse_store_url


def build_parser(required: bool = True) -> argparse.ArgumentParser:
    """The job's flags (``required=False``: none required, to sort flags with; see
    ``batch.job_options.parse_job_flags``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--input", required=required, help="file pattern (local or gs://)")
    parser.add_argument("--output", required=required, help="output prefix; dead letters go to PREFIX-errors-*")
    where = parser.add_mutually_exclusive_group(required=required)
    where.add_argument("--model_base_path", help="folder of numeric version folders (local or gs://)")
    where.add_argument("--prediction_service", metavar="HOST:PORT",
                       help="call this TF Serving PredictionService (e.g. the gateway) instead of "
                            "loading the model: the 'microservice' approach, for comparison")
    parser.add_argument("--model_name", default="default",
                        help="the model's name at --prediction_service, and in --prediction_store: there it "
                             "must be the name the gateway serves the model under")
    parser.add_argument("--model_version", type=int, help="default: the newest")
    parser.add_argument("--signature_name", default="serving_default")
    add_tf2_session_flag(parser)
    parser.add_argument("--key_field", help="carry only this field to the output (default: the whole row)")
    parser.add_argument("--input_format", choices=["jsonl", "parquet", "csv", "tfrecord"], default="jsonl",
                        help="csv: with a header line; tfrecord: of tf.Example")
    parser.add_argument("--output_format", choices=["jsonl", "parquet"], default="jsonl")
    parser.add_argument("--chunk_rows", type=int, default=2048,
                        help="rows per model call (and per write to --prediction_store)")
    parser.add_argument("--prediction_store", metavar="URL",
                        help="also write each row's outputs to this store, under (--model_name, the model "
                             "version that ran, the row's --key_field), for the gateway to answer from: "
                             "sqlite:///ABSOLUTE/PATH.db (a file: local runs) or "
                             "redis://[[USER]:PASSWORD@]HOST:PORT/DB (Memorystore); needs --key_field")
    add_dead_letter_flags(parser)
    add_verbose_flag(parser)
    return parser


JUDGED_AFTER_THE_RUN = frozenset({"fail_on_dead_letters", "max_dead_letter_fraction"})
"""Flags that judge the finished job, here: not Flex Template parameters, as a Flex Template
launch ends before its job runs."""


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """This job's flags, and the rest (Beam's options)."""
    return build_parser().parse_known_args(argv)


def _options(beam_args: list[str]) -> Any:
    if not any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        beam_args = ["--runner=FnApiRunner", *beam_args]
    return beam_options(beam_args)


def _store_place(parser: argparse.ArgumentParser, args: argparse.Namespace) -> SqliteUrl | RedisUrl | None:
    """The place ``--prediction_store`` names (or None); a store the job cannot use is a
    usage error (exit 2) before anything runs: a URL that does not parse (the message never
    shows its password), or no key field."""
    if args.prediction_store is None:
        return None
    try:
        where = parse_store_url(args.prediction_store)
    except BadStoreUrl as error:
        parser.error(f"--prediction_store: {error}")
    if not args.key_field:
        parser.error("--prediction_store needs --key_field: the field that keys each row in the store")
    if not args.model_name:
        parser.error("--prediction_store needs a --model_name (the name the gateway serves the model under)")
    return where


def _check_store_runner(parser: argparse.ArgumentParser, where: SqliteUrl | RedisUrl | None, options: Any) -> None:
    """A SQLite store is a file on the machine that writes it: on Dataflow each worker would
    write a file of its own, lost with the worker."""
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner or ""
    if isinstance(where, SqliteUrl) and "dataflow" in str(runner).lower():
        parser.error("--prediction_store: a sqlite store is a file on the machine that writes it; on Dataflow "
                     "each worker would write its own. Use a redis:// store (Memorystore)")


def main(argv: Sequence[str] | None = None) -> dict[str, int]:
    """Run the job; its counters (``rows_stored`` too when it writes a store). Exits 3
    (``SystemExit``) when it dead-lettered more rows than its flags allow."""
    setup_job_logging()
    parser, args, beam_args = parse_job_flags(build_parser, sys.argv[1:] if argv is None else argv)
    where = _store_place(parser, args)
    options = _options(beam_args)
    _check_store_runner(parser, where, options)
    quiet_tensorflow(args)
    import apache_beam as beam

    from batch.model_handler import ModelLocation
    from batch.pipeline import NAMESPACE, REASONS_NAMESPACE, BatchJob, build, job_counts

    model = ModelLocation(args.model_base_path, args.prediction_service, args.model_name, args.model_version,
                          args.tf2_session, args.tf_session_direct_call)
    job = BatchJob(args.input, args.output, model, args.signature_name, args.key_field, args.chunk_rows,
                   args.input_format, args.output_format, args.prediction_store)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, job)
    result = pipeline.run()
    if is_dry_run(options):
        print(describe_dry_run(result, options), flush=True)
        return {}
    result.wait_until_finish()
    if getattr(result, "has_job", True) is False:
        # A Flex Template launcher runs this to write the job description: nothing ran here.
        logging.getLogger("batch").info(
            "job description written; no job ran here to count: the job's counters are on its Dataflow page "
            "(%s: rows_in, rows_written, rows_dead_lettered; %s: dead letters by reason), its dead letters "
            "in %s", NAMESPACE, REASONS_NAMESPACE, job.dead_letter_files)
        if args.fail_on_dead_letters or args.max_dead_letter_fraction is not None:
            logging.getLogger("batch").warning("--fail_on_dead_letters, --max_dead_letter_fraction: not checked, "
                                               "as no job ran here")
        return {}
    counts = job_counts(result, job)
    tell(counts, job.dead_letter_files, args.fail_on_dead_letters, args.max_dead_letter_fraction)
    return counts.as_dict()


if __name__ == "__main__":
    main()
