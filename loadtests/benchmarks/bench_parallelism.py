"""What TF Serving's ``--tensorflow_intra_op_parallelism`` / ``--tensorflow_inter_op_parallelism``
(``serving.runtime.parallelism``) change on this machine: model calls/s and CPU per call of
the model alone, each setting against TensorFlow's default (0/0, one thread per core for each
pool) measured in the same run.

TensorFlow sizes its pools once per process, so each setting runs in a fresh subprocess (not
pinned: the pools are about using the cores) that applies it as the gateway does
(``parallelism.apply_to_eager`` before any op, then ``savedmodel.load(...,
session_config=parallelism.session_config(...))`` and the gateway's warm-up, which moves a TF2
model to a TF1 Session where it answers alike). Each model is then called on its first warm-up
request, rows repeated to each size, by 1 and by 2 threads at once (the gateway's batcher calls
models from a thread pool): ``--warmup`` seconds untimed, then ``--duration`` seconds counted.
Per point: calls/s (wall clock), process CPU ms per call (TensorFlow's threads included), and
the CPU the rest of the machine used meanwhile (``/proc/stat`` less this process: the shared
host's load). natality (16-feature MLP) runs in a TF1 Session, so its ConfigProto matters;
image_classifier (MobileNet with JPEG decoding) keeps its TF2 functions, so tf.config.threading
does. The settings run ``--rounds`` times, interleaved; a point's figure is the median of its
rounds (not the best: on the shared host other load moved single rounds by up to 2x, some
settings' calls/s up), and the baseline's round-to-round spread is printed as the noise to read
the ratios against.

    python -m loadtests.benchmarks.bench_parallelism [--settings 0:0,1:1,2:1,1:2]
        [--models natality,image_classifier] [--rows 1,64] [--duration 5] [--warmup 1]
        [--rounds 3] [--out bench-results]

Results: a markdown table on stdout and ``OUT/parallelism-<time>.json``,
``OUT/parallelism-latest.json`` and ``OUT/parallelism-latest.md``; each subprocess's log under
``OUT/logs/``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from loadtests.benchmarks.bench_results import Failure, to_json
from loadtests.support.outputs import RUNS
from loadtests.support.processes import REPO, Job, git_commit, log, terminate_on_sigterm

DEFAULT_ROWS = {"natality": (1, 512), "image_classifier": (1, 16)}
"""Rows per call when ``--rows`` is not given: one, and a batch whose arithmetic shows (an image
call of 64 rows takes over a second here, too few calls per point)."""
CALLERS = (1, 2)
WARMUP_SIZES = (1, 8)
PREFIX = "PARALLELISM_JSON "
CHILD_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class Setting:
    intra_op: int
    inter_op: int

    @property
    def label(self) -> str:
        if not self.intra_op and not self.inter_op:
            return "default (0/0)"
        return f"intra {self.intra_op}, inter {self.inter_op}"

    @classmethod
    def parse(cls, text: str) -> Setting:
        intra, inter = (int(part) for part in text.split(":"))
        if min(intra, inter) < 0:
            raise ValueError(f"negative thread count in {text!r}")
        return cls(intra, inter)


@dataclass(frozen=True)
class Point:
    """One model at one (rows, callers) under one setting, one round."""

    model: str
    rows: int
    callers: int
    calls: int
    seconds: float
    cpu_seconds: float
    others_cpu: float | None
    """Cores the rest of the machine kept busy meanwhile (None: no ``/proc/stat``)."""
    p50_ms: float
    p99_ms: float

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds

    @property
    def cpu_ms_per_call(self) -> float:
        return self.cpu_seconds / self.calls * 1e3


@dataclass(frozen=True)
class SettingRun:
    """One subprocess: a setting, the threads its process held after warm-up, its points."""

    setting: Setting
    round: int
    threads: int
    runners: dict[str, str]
    """Model name -> ``session`` or ``functions``: which runtime the setting had to size."""
    points: tuple[Point, ...]

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SettingRun:
        return cls(Setting(**doc["setting"]), doc["round"], doc["threads"], doc["runners"],
                   tuple(Point(**point) for point in doc["points"]))


# --- in the subprocess ----------------------------------------------------------------------


def _busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``)."""
    try:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (
            int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def drive(call: Callable[[], object], callers: int, seconds: float) -> tuple[int, float, float, list[float]]:
    """``callers`` threads calling ``call`` until ``seconds`` have passed: calls made, wall
    seconds, process CPU seconds and every call's latency."""
    start = threading.Barrier(callers + 1)
    deadline = 0.0

    def caller() -> list[float]:
        start.wait()
        latencies = []
        while (began := time.perf_counter()) < deadline:
            call()
            latencies.append(time.perf_counter() - began)
        return latencies

    with ThreadPoolExecutor(callers) as pool:
        futures = [pool.submit(caller) for _ in range(callers)]
        cpu, wall = time.process_time(), time.perf_counter()
        deadline = wall + seconds
        start.wait()
        latencies = [latency for future in futures for latency in future.result()]
    return len(latencies), time.perf_counter() - wall, time.process_time() - cpu, latencies


def measure_point(model: str, rows: int, callers: int, call: Callable[[], object], duration: float,
                  warmup: float) -> Point:
    if warmup:
        drive(call, callers, warmup)
    busy = _busy_cpu_seconds()
    calls, seconds, cpu, latencies = drive(call, callers, duration)
    after = _busy_cpu_seconds()
    others = None if busy is None or after is None else max(0.0, (after - busy - cpu) / seconds)
    latencies.sort()
    return Point(model, rows, callers, calls, seconds, cpu, others,
                 latencies[len(latencies) // 2] * 1e3, latencies[int(len(latencies) * 0.99)] * 1e3)


def measure_setting(setting: Setting, round_: int, models_dir: Path, rows: dict[str, tuple[int, ...]],
                    duration: float, warmup: float) -> SettingRun:
    """Apply ``setting`` as the gateway does, load and warm every model, time every point."""
    from serving.runtime import parallelism

    parallelism.apply_to_eager(setting.intra_op, setting.inter_op)  # before any TensorFlow op
    from loadtests.baselines import latest_version
    from loadtests.benchmarks.bench_runners import resized, sample
    from serving.runtime import savedmodel
    from serving.runtime import warmup as model_warmup

    loaded = {}
    for name in rows:
        model = savedmodel.load(latest_version(str(models_dir / name)),
                                session_config=parallelism.session_config(setting.intra_op, setting.inter_op))
        model_warmup.run(model, WARMUP_SIZES)
        loaded[name] = model
    threads = len(os.listdir("/proc/self/task"))
    points = []
    for name, model in loaded.items():
        signature, inputs = sample(model)
        for size in rows[name]:
            batch = resized(inputs, size)
            for callers in CALLERS:
                points.append(measure_point(name, size, callers, partial(model.run, signature, batch),
                                            duration, warmup))
    return SettingRun(setting, round_, threads,
                      {name: "session" if model.in_session else "functions" for name, model in loaded.items()},
                      tuple(points))


# --- the run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    started: str
    commit: str
    cpus: int | None
    duration: float
    warmup: float
    rounds: int
    settings: tuple[Setting, ...]
    """The first is the baseline of every ratio."""
    runs: tuple[SettingRun, ...]
    failures: tuple[tuple[str, Failure], ...]
    load_before: tuple[float, float, float]
    """The 1, 5 and 15 minute load averages when the run started."""


def child_argv(setting: Setting, round_: int, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "loadtests.benchmarks.bench_parallelism",
            f"--child={setting.intra_op}:{setting.inter_op}", f"--round={round_}",
            f"--models={','.join(args.models)}", f"--models-dir={args.models_dir}",
            f"--duration={args.duration}", f"--warmup={args.warmup}",
            *([f"--rows={','.join(map(str, args.rows))}"] if args.rows else [])]


def run_setting(setting: Setting, round_: int, args: argparse.Namespace) -> SettingRun:
    """One setting in its own process; its result is the ``PREFIX`` line of its log."""
    path = args.out / "logs" / f"parallelism-{setting.intra_op}-{setting.inter_op}-round{round_}.log"
    with Job(f"{setting.label} round {round_}", child_argv(setting, round_, args), path) as job:
        try:
            job.proc.wait(timeout=CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"took over {CHILD_TIMEOUT_S:g} s") from None
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(PREFIX) and job.proc.returncode == 0:
                return SettingRun.from_json(json.loads(line[len(PREFIX):]))
        raise RuntimeError(f"exited with {job.proc.returncode}:\n{job.log_tail()}")


def run(args: argparse.Namespace) -> Report:
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_before = os.getloadavg()
    runs, failures = [], []
    for round_ in range(1, args.rounds + 1):  # interleaved: drift in the machine's load hits every setting
        for setting in args.settings:
            log(f"round {round_}/{args.rounds}: {setting.label}")
            try:
                runs.append(run_setting(setting, round_, args))
            except RuntimeError as error:
                failures.append((f"{setting.label} round {round_}", Failure(str(error))))
                log(f"{setting.label} round {round_} failed: {error}")
    return Report(started, git_commit(), os.cpu_count(), args.duration, args.warmup, args.rounds,
                  tuple(args.settings), tuple(runs), tuple(failures), load_before)


# --- the report -----------------------------------------------------------------------------


def points_of(report: Report, setting: Setting, key: tuple[str, int, int]) -> list[Point]:
    return [p for r in report.runs if r.setting == setting for p in r.points
            if (p.model, p.rows, p.callers) == key]


def table(report: Report) -> str:
    base, others = report.settings[0], report.settings[1:]
    keys = list(dict.fromkeys((p.model, p.rows, p.callers) for r in report.runs for p in r.points))

    def median(setting: Setting, key: tuple[str, int, int]) -> tuple[float, float] | None:
        found = points_of(report, setting, key)
        if not found:
            return None
        return (statistics.median(p.calls_per_s for p in found),
                statistics.median(p.cpu_ms_per_call for p in found))

    lines = [
        f"## TensorFlow thread pools: model calls/s and CPU per call against {base.label}",
        "",
        f"{report.started}, commit {report.commit}, {report.cpus} cores; {report.duration:g} s per "
        f"point after {report.warmup:g} s of warm-up, median of {report.rounds} interleaved rounds. "
        "Other cells: calls/s ratio / CPU-per-call ratio against the first setting "
        "(calls/s above 1 is faster; CPU below 1 is cheaper). Spread: the first setting's most over "
        "least calls/s between rounds (the noise).",
        "",
        f"| model | rows | callers | {base.label} calls/s | CPU ms/call | spread | "
        + " | ".join(s.label for s in others) + " |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(others),
    ]
    for key in keys:
        baseline = median(base, key)
        rates = [p.calls_per_s for p in points_of(report, base, key)]
        cells = [key[0], str(key[1]), str(key[2])]
        cells += (["—"] * 3 if baseline is None else
                  [f"{baseline[0]:,.1f}", f"{baseline[1]:,.2f}", f"{max(rates) / min(rates):.2f}x"])
        for setting in others:
            measured = median(setting, key)
            cells.append("—" if measured is None or baseline is None else
                         f"{measured[0] / baseline[0]:.2f}x / {measured[1] / baseline[1]:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *_notes(report)]
    return "\n".join(lines) + "\n"


def _notes(report: Report) -> list[str]:
    notes = []
    for setting in report.settings:
        own = [r for r in report.runs if r.setting == setting]
        if own:
            runners = ", ".join(f"{m} in {how}" for m, how in own[0].runners.items())
            threads = "/".join(str(r.threads) for r in own)
            notes.append(f"- {setting.label}: {threads} process threads after warm-up ({runners})")
    loads = [p.others_cpu for r in report.runs for p in r.points if p.others_cpu is not None]
    if loads:
        notes.append(f"- the rest of the machine meanwhile: {sum(loads) / len(loads):.2f} cores busy on "
                     f"average, {max(loads):.2f} at most (load average at start "
                     + "/".join(f"{v:.2f}" for v in report.load_before) + ")")
    notes += [f"- FAILED {what}: {failure.error}" for what, failure in report.failures]
    return notes


def write(report: Report, out: Path) -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    doc = to_json(report)
    for run_, out_run in zip(report.runs, doc["runs"], strict=True):
        for point, out_point in zip(run_.points, out_run["points"], strict=True):
            out_point.update(calls_per_s=point.calls_per_s, cpu_ms_per_call=point.cpu_ms_per_call)
    text = json.dumps(doc, indent=2)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"parallelism-{stamp}.json").write_text(text)
    (out / "parallelism-latest.json").write_text(text)
    (out / "parallelism-latest.md").write_text(table(report))
    log(f"wrote {out}/parallelism-{stamp}.json, parallelism-latest.json, parallelism-latest.md")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    def sizes(text: str) -> tuple[int, ...]:
        return tuple(int(size) for size in text.split(","))

    parser = argparse.ArgumentParser(prog="python -m loadtests.benchmarks.bench_parallelism",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default="0:0,1:1,2:1,1:2",
                        type=lambda text: tuple(Setting.parse(part) for part in text.split(",")),
                        help="INTRA:INTER thread counts, comma-separated; the first is the baseline")
    parser.add_argument("--models", default="natality,image_classifier", type=lambda text: text.split(","))
    parser.add_argument("--rows", type=sizes, default=None,
                        help="rows per call for every model (default: "
                             + ", ".join(f"{m} {','.join(map(str, r))}" for m, r in DEFAULT_ROWS.items()) + ")")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="untimed seconds per point")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RUNS)
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument("--child", type=Setting.parse, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.rounds < 1 or (args.rows and min(args.rows) < 1):
        parser.error("--duration must be > 0, --warmup >= 0, --rounds and --rows >= 1")
    unknown = [m for m in args.models if args.rows is None and m not in DEFAULT_ROWS]
    if unknown:
        parser.error(f"no default rows for {', '.join(unknown)}: give --rows")
    args.out, args.models_dir = args.out.resolve(), args.models_dir.resolve()
    return args


def main(argv: Sequence[str] | None = None) -> Report | None:
    args = parse_args(argv)
    if args.child is not None:
        rows = {m: args.rows or DEFAULT_ROWS[m] for m in args.models}
        result = measure_setting(args.child, args.round, args.models_dir, rows, args.duration, args.warmup)
        print(PREFIX + json.dumps(to_json(result)), flush=True)
        return None
    terminate_on_sigterm()
    report = run(args)
    print(table(report), flush=True)
    write(report, args.out)
    return report


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted; subprocesses stopped")
        sys.exit(130)
