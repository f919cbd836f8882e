"""How a batch run ends (``batch.report``): the summary on stderr, the dead-letter warning, the
exit status of ``--fail_on_dead_letters`` / ``--max_dead_letter_fraction``, and flags named."""
from __future__ import annotations

import json
import logging
import re

import pytest

from batch.report import EXIT_TOO_MANY_DEAD_LETTERS, JobCounts, summary, verdict
from batch.run import main
from serving.examples import natality
from tests.batch.test_cli import run_cli
from tests.batch.test_pipeline import write_rows
from tests.test_startup import NOISE

REASONS = {  # MALFORMED's rows, by the reason kind each is counted under
    "not JSON": 1, "missing input(s) ['gestation_weeks', 'mother_age', 'plurality']": 1, "input 'mother_age'": 1,
    "inference failed": 1, "expected a JSON object, got list": 1}
GOOD = 20
"""Rows that run, beside MALFORMED's 5: 5 of 25 (20%) are dead-lettered."""


def job(tmp_path, models_dir, *flags: str) -> list[str]:
    write_rows(tmp_path / "in.jsonl", GOOD)
    return ["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out" / "pred"),
            "--model_base_path", str(models_dir / "natality"), "--key_field", "id", *flags]


def summary_of(stderr: str) -> tuple[dict[str, int], str]:
    """The summary line's dead letters by reason, and where it says they are."""
    found = re.search(r"^\S+ \S+ INFO batch: finished: rows in: 25, written: 20, dead-lettered: 5 \((.+)\); "
                      r"dead letters in (\S+)$", stderr, re.MULTILINE)
    assert found, stderr[-3000:]
    reasons = {}
    for part in found[1].split("; "):
        count, kind = part.split(" ", 1)
        reasons[kind] = int(count)
    return reasons, found[2]


@pytest.mark.slow
def test_a_run_with_bad_rows_tells_its_counts_on_stderr_and_passes(tmp_path, models_dir):
    """The real CLI, whose Beam options set logging up at WARNING if the job let them."""
    done = run_cli("batch/run.py", job(tmp_path, models_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    reasons, where = summary_of(done.stderr)
    assert reasons == REASONS
    assert where == f"{tmp_path}/out/pred-errors-*.jsonl"
    assert re.search(rf"^\S+ \S+ WARNING batch: 5 of 25 rows \(20%\) were dead-lettered: each is in "
                     rf"{re.escape(where)} with its input and the reason", done.stderr, re.MULTILINE)
    assert len(list((tmp_path / "out").glob("pred-errors-*.jsonl"))) == 1
    assert "Converting string literal type hint" not in done.stderr  # Beam's chatter stays out
    assert " ERROR batch" not in done.stderr
    for noise in NOISE:  # nor TensorFlow's start-up lines (serving/tf_noise.py)
        assert noise not in done.stderr


@pytest.mark.slow
def test_fail_on_dead_letters_exits_3_after_the_summary(tmp_path, models_dir):
    done = run_cli("batch/run.py", job(tmp_path, models_dir, "--fail_on_dead_letters"))
    assert done.returncode == EXIT_TOO_MANY_DEAD_LETTERS == 3, done.stderr[-3000:]
    assert summary_of(done.stderr)[0] == REASONS
    assert re.search(r"^\S+ \S+ ERROR batch: --fail_on_dead_letters: 5 of 25 rows \(20%\) were dead-lettered: "
                     r"exit status 3$", done.stderr, re.MULTILINE), done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert len(list((tmp_path / "out").glob("pred-0*.jsonl"))) == 1  # the output is written all the same


@pytest.mark.parametrize("fraction, passes", [("0.25", True), ("0.2", True), ("0.1", False), ("0", False)])
def test_max_dead_letter_fraction_fails_the_run_only_above_it(tmp_path, models_dir, caplog, fraction, passes):
    caplog.set_level(logging.INFO, logger="batch")
    run = job(tmp_path, models_dir, f"--max_dead_letter_fraction={fraction}")
    if passes:
        assert main(run) == {"rows_in": 25, "rows_written": 20, "rows_dead_lettered": 5}
    else:
        with pytest.raises(SystemExit) as exited:
            main(run)
        assert exited.value.code == EXIT_TOO_MANY_DEAD_LETTERS
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ([] if passes else [
        f"--max_dead_letter_fraction={float(fraction):g}: 5 of 25 rows (20%) were dead-lettered: exit status 3"])
    assert any(r.levelno == logging.WARNING and "5 of 25 rows (20%) were dead-lettered" in r.getMessage()
               for r in caplog.records)


def test_a_run_without_dead_letters_passes_any_bar(tmp_path, models_dir, caplog):
    caplog.set_level(logging.INFO, logger="batch")
    columns = natality.sample_rows(10, seed=5)
    (tmp_path / "in.jsonl").write_text("".join(
        json.dumps({k: v.tolist()[i] for k, v in columns.items()}) + "\n" for i in range(10)))
    counts = main(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out"),
                   "--model_base_path", str(models_dir / "natality"), "--fail_on_dead_letters",
                   "--max_dead_letter_fraction", "0"])
    assert counts == {"rows_in": 10, "rows_written": 10, "rows_dead_lettered": 0}
    assert [r.getMessage() for r in caplog.records if r.name == "batch"] == [
        "finished: rows in: 10, written: 10, dead-lettered: 0"]


@pytest.mark.parametrize("flags", [["--model_base_pth=/x"], ["--model_base_pth", "/x"]])
def test_an_unknown_flag_is_named_even_where_a_required_one_is_missing(flags, capsys):
    with pytest.raises(SystemExit) as exited:
        main([*flags, "--input", "in.jsonl", "--output", "out"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"unrecognized arguments (neither this job's nor Beam's options): {' '.join(flags)}" in err, err
    assert "required" not in err


def test_a_missing_required_flag_is_still_told(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--input", "in.jsonl", "--output", "out"])
    assert exited.value.code == 2
    assert "one of the arguments --model_base_path --prediction_service is required" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["1.5", "-0.1", "half"])
def test_a_fraction_outside_0_to_1_is_bad_usage(value, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--input", "i", "--output", "o", "--model_base_path", "m", f"--max_dead_letter_fraction={value}"])
    assert exited.value.code == 2
    assert "--max_dead_letter_fraction" in capsys.readouterr().err


def test_the_summary_names_reasons_by_count_and_the_store():
    counts = JobCounts(10, 7, 3, rows_stored=7, reasons={"not JSON": 1, "inference failed": 2})
    assert summary(counts, "gs://b/out-errors-*.jsonl") == (
        "rows in: 10, written: 7, dead-lettered: 3 (2 inference failed; 1 not JSON), stored: 7; "
        "dead letters in gs://b/out-errors-*.jsonl")


def test_the_verdict_of_an_empty_run_is_a_pass():
    empty = JobCounts(0, 0, 0)
    assert verdict(empty, True, 0.0) is None and empty.dead_fraction() == 0.0
    assert verdict(JobCounts(3, 2, 1), False, None) is None
