"""What ``batch/run.py`` and ``streaming/run.py`` share about Beam's options and the job
they launch: strict flags, the model runner flag, and a dry run that says what it built.

Beam's ``PipelineOptions`` only warns about (and drops) a flag it does not know, so a
misspelled job flag (``--prediction_servce``) would pass silently: each CLI parses its own
flags, then hands what is left to Beam's own parser (built by Beam from every registered
``PipelineOptions`` class) and refuses whatever that does not know either. That comes first:
argparse reports a missing required flag before it returns the unknown ones, so a misspelled
required flag (``--model_base_pth``) would be told as "--model_base_path is required".
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from typing import Any

from serving.cli import parse_bool
from serving.logs import setup_logging


def setup_job_logging() -> None:
    """The one logging set-up (``serving.logs``), made before Beam's options would make theirs
    (at WARNING, hiding the job's summary), without the INFO line Beam logs for each string
    type hint it reads (this project's annotations are strings: a screenful per job)."""
    setup_logging()
    logging.getLogger("apache_beam.typehints.native_type_compatibility").setLevel(logging.WARNING)


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """``--verbose``: TensorFlow's own start-up lines, left out by default (``serving.tf_noise``)."""
    parser.add_argument("--verbose", type=parse_bool, nargs="?", const=True, default=False, metavar="BOOL",
                        help="show TensorFlow's own start-up lines (GPU probing, CPU instructions, "
                             "deprecations), left out by default")


def quiet_tensorflow(args: argparse.Namespace) -> None:
    """Import TensorFlow now, its start-up noise left out unless ``--verbose``: before the
    pipeline runs, so its model loading finds it imported."""
    from serving.tf_noise import import_tensorflow

    import_tensorflow(args.verbose)


def add_tf2_session_flag(parser: argparse.ArgumentParser) -> None:
    """The gateway's ``--tf2_session`` and ``--tf_session_direct_call``, for the pipelines'
    in-process models."""
    parser.add_argument("--tf2_session", type=parse_bool, nargs="?", const=True, default=True, metavar="BOOL",
                        help="run a TF2 SavedModel in a TF1 Session if its warm-up requests are answered "
                             "there as by its functions (a fifth of the CPU per call); false: always its "
                             "functions")
    parser.add_argument("--tf_session_direct_call", type=parse_bool, nargs="?", const=True, default=True,
                        metavar="BOOL", help="call a TF1 Session through TensorFlow's internal C entry, as TF "
                        "Serving does; false: the public Session.run, which also checks feed shapes")


def parse_job_flags(build_parser: Callable[[bool], argparse.ArgumentParser], argv: Sequence[str],
                    ) -> tuple[argparse.ArgumentParser, argparse.Namespace, list[str]]:
    """The job's parser (``build_parser(True)``), its flags, and the rest (Beam's options).
    A flag neither the job nor Beam knows is a usage error that names it (``parser.error``,
    exit status 2), even beside a missing required flag: the flags are first sorted by the
    parser built without required flags (``build_parser(False)``)."""
    _, rest = build_parser(False).parse_known_args(argv)
    parser = build_parser(True)
    unknown = unknown_beam_args(rest)
    if unknown:
        parser.error(f"unrecognized arguments (neither this job's nor Beam's options): {' '.join(unknown)}")
    args, beam_args = parser.parse_known_args(argv)
    return parser, args, beam_args


def beam_options(beam_args: Sequence[str]) -> Any:
    """``PipelineOptions`` of ``beam_args`` (which ``parse_job_flags`` has checked)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(list(beam_args), save_main_session=False)


def unknown_beam_args(beam_args: Sequence[str]) -> list[str]:
    """The arguments Beam's option parser leaves over (what it would warn about and drop)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    parsers: list[argparse.ArgumentParser] = []
    # get_all_options builds Beam's parser from every PipelineOptions subclass and passes it
    # to add_extra_args_fn: the same parser Beam uses, without reaching into its privates.
    PipelineOptions([]).get_all_options(add_extra_args_fn=parsers.append)
    _, unknown = parsers[0].parse_known_args(list(beam_args))
    return unknown


def is_dry_run(options: Any) -> bool:
    """``--dry_run`` as Beam's DataflowRunner reads it (any value but empty counts)."""
    from apache_beam.options.pipeline_options import TestOptions

    return bool(options.view_as(TestOptions).dry_run)


def describe_dry_run(result: Any, options: Any) -> str:
    """What a dry run built: the Dataflow job's name, type, place, steps and image."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    from apache_beam.portability.api import beam_runner_api_pb2

    job = getattr(result, "job", None)
    if job is None:
        return "Dry run: the pipeline was built; this runner describes no job"
    proto, graph = job.proto, job.proto_pipeline
    transforms = graph.components.transforms
    steps: list[str] = []
    for root in graph.root_transform_ids:
        children = transforms[root].subtransforms
        steps += [transforms[child].unique_name for child in children] or [transforms[root].unique_name]
    images = sorted({beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
                     for env in graph.components.environments.values()
                     if env.urn == "beam:env:docker:v1"})
    kind = getattr(proto.type, "name", str(proto.type))
    cloud = options.view_as(GoogleCloudOptions)
    return (f"Dry run: built Dataflow job '{proto.name}' ({kind}) for project {cloud.project}, "
            f"region {cloud.region}; {len(steps)} steps: {', '.join(steps)}; container image: "
            f"{', '.join(images) or 'none'}. Nothing was submitted.")
