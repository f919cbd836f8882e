"""``serving.logs.setup_logging`` in a fresh process (pytest's own handlers would make it a
no-op here): what it does after a bare ``basicConfig()``, as Beam's options make, and after
a real set-up, which it leaves alone."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def stderr_of(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", "import logging\nfrom serving.logs import setup_logging\n" + code],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_after_a_bare_basic_config_info_lines_reach_stderr_once_in_our_format():
    said = stderr_of("logging.basicConfig()\nsetup_logging()\nlogging.getLogger('batch').info('rows in: 3')\n")
    assert said.count("rows in: 3") == 1 and said.rstrip().endswith(" INFO batch: rows in: 3"), said


def test_beams_options_do_not_hide_info_lines():
    said = stderr_of("from apache_beam.options.pipeline_options import PipelineOptions\nPipelineOptions([])\n"
                     "setup_logging()\nlogging.getLogger('batch').info('rows in: 3')\n")
    assert said.count("rows in: 3") == 1 and said.rstrip().endswith(" INFO batch: rows in: 3"), said


def test_a_set_up_with_its_own_format_is_left_alone():
    said = stderr_of("logging.basicConfig(format='mine %(message)s', level=logging.WARNING)\nsetup_logging()\n"
                     "logging.getLogger('x').info('hidden')\nlogging.getLogger('x').warning('shown')\n")
    assert said == "mine shown\n", said


def test_a_fresh_process_gets_our_format_at_info():
    said = stderr_of("setup_logging()\nlogging.getLogger('serving').info('ready')\n")
    assert said.rstrip().endswith(" INFO serving: ready") and said.count("\n") == 1, said
