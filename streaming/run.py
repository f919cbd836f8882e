"""``python streaming/run.py --input_subscription projects/P/subscriptions/S --output_topic
projects/P/topics/T --dead_letter_topic projects/P/topics/D --model_base_path DIR [Beam options]``

Enriches Pub/Sub messages (a JSON row or a list of rows each) with a SavedModel's
predictions. Streaming by default; any Beam option passes through (``--runner
DataflowRunner --project ... --region ... --temp_location gs://...``).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from batch.job_options import add_tf2_session_flag, beam_options, describe_dry_run, is_dry_run
from serving.logs import setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input_subscription", help="projects/P/subscriptions/S")
    source.add_argument("--input_topic", help="projects/P/topics/T (a temporary subscription is made)")
    parser.add_argument("--output_topic", required=True)
    parser.add_argument("--dead_letter_topic", required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--model_base_path", help="folder of numeric version folders (local or gs://)")
    where.add_argument("--prediction_service", metavar="HOST:PORT", help="call this PredictionService instead")
    parser.add_argument("--model_name", default="default", help="the model's name at --prediction_service")
    parser.add_argument("--model_version", type=int, help="default: the newest")
    parser.add_argument("--signature_name", default="serving_default")
    add_tf2_session_flag(parser)
    parser.add_argument("--max_wait_ms", type=float, default=10.0,
                        help="how long a message may wait to share a model call (0: no waiting)")
    parser.add_argument("--messages_per_call", type=int, default=256)
    return parser


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """This job's flags, and the rest (Beam's options)."""
    return build_parser().parse_known_args(argv)


def _options(parser: argparse.ArgumentParser, beam_args: list[str]) -> Any:
    if "--streaming" not in beam_args:
        beam_args = ["--streaming", *beam_args]
    return beam_options(parser, beam_args)


def main(argv: Sequence[str] | None = None) -> Any:
    """Build and start the job; its result (a dry run has printed what it built)."""
    parser = build_parser()
    args, beam_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    options = _options(parser, beam_args)  # a flag neither this job nor Beam knows: exit 2
    setup_logging()
    import apache_beam as beam

    from batch.model_handler import ModelLocation
    from streaming.pipeline import StreamJob, build

    job = StreamJob(
        output_topic=args.output_topic, dead_letter_topic=args.dead_letter_topic,
        model=ModelLocation(args.model_base_path, args.prediction_service, args.model_name,
                            args.model_version, args.tf2_session, args.tf_session_direct_call),
        input_subscription=args.input_subscription, input_topic=args.input_topic,
        signature_name=args.signature_name, max_wait_s=(args.max_wait_ms / 1000.0) or None,
        messages_per_call=args.messages_per_call)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, job)
    result = pipeline.run()
    if is_dry_run(options):
        print(describe_dry_run(result, options), flush=True)
    return result


if __name__ == "__main__":
    main().wait_until_finish()  # a dry run's result finishes at once
