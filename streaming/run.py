"""``python streaming/run.py --input_subscription projects/P/subscriptions/S --output_topic
projects/P/topics/T --dead_letter_topic projects/P/topics/D --model_base_path DIR [Beam options]``

Enriches Pub/Sub messages (a JSON row or a list of rows each) with a SavedModel's
predictions. Streaming by default; any Beam option passes through (``--runner
DataflowRunner --project ... --region ... --temp_location gs://...``).

A streaming job never finishes, so it has no summary: its start names its topics on stderr,
and its counters (``tfgw_streaming``) and dead-letter topic tell how it goes. The batch job's
``--fail_on_dead_letters`` and ``--max_dead_letter_fraction`` are refused here (exit 2).
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
from batch.report import add_dead_letter_flags

log = logging.getLogger("streaming")


def build_parser(required: bool = True) -> argparse.ArgumentParser:
    """The job's flags (``required=False``: none required, to sort flags with; see
    ``batch.job_options.parse_job_flags``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument("--input_subscription", help="projects/P/subscriptions/S")
    source.add_argument("--input_topic", help="projects/P/topics/T (a temporary subscription is made)")
    parser.add_argument("--output_topic", required=required)
    parser.add_argument("--dead_letter_topic", required=required,
                        help="each message that fails goes here, with the reason in its 'error' attribute")
    where = parser.add_mutually_exclusive_group(required=required)
    where.add_argument("--model_base_path", help="folder of numeric version folders (local or gs://)")
    where.add_argument("--prediction_service", metavar="HOST:PORT", help="call this PredictionService instead")
    parser.add_argument("--model_name", default="default", help="the model's name at --prediction_service")
    parser.add_argument("--model_version", type=int, help="default: the newest")
    parser.add_argument("--signature_name", default="serving_default")
    add_tf2_session_flag(parser)
    parser.add_argument("--max_wait_ms", type=float, default=10.0,
                        help="how long a message may wait to share a model call (0: no waiting)")
    parser.add_argument("--messages_per_call", type=int, default=256)
    add_dead_letter_flags(parser, shown=False)  # to refuse them by name (main)
    add_verbose_flag(parser)
    return parser


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """This job's flags, and the rest (Beam's options)."""
    return build_parser().parse_known_args(argv)


def _options(beam_args: list[str]) -> Any:
    if "--streaming" not in beam_args:
        beam_args = ["--streaming", *beam_args]
    return beam_options(beam_args)


def main(argv: Sequence[str] | None = None) -> Any:
    """Build and start the job; its result (a dry run has printed what it built)."""
    setup_job_logging()
    parser, args, beam_args = parse_job_flags(build_parser, sys.argv[1:] if argv is None else argv)
    if args.fail_on_dead_letters or args.max_dead_letter_fraction is not None:
        parser.error("--fail_on_dead_letters and --max_dead_letter_fraction are the batch job's: a streaming "
                     "job never finishes to be judged. Its dead letters go to --dead_letter_topic (watch its "
                     "backlog) and count in the tfgw_streaming/messages_dead_lettered counter")
    options = _options(beam_args)
    quiet_tensorflow(args)
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
    log.info("reading %s; answers to %s; dead letters (the reason in their 'error' attribute) to %s",
             job.input_subscription or job.input_topic, job.output_topic, job.dead_letter_topic)
    result = pipeline.run()
    if is_dry_run(options):
        print(describe_dry_run(result, options), flush=True)
    return result


if __name__ == "__main__":
    main().wait_until_finish()  # a dry run's result finishes at once
