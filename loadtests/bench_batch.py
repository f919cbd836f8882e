"""``make bench-batch``: rows/s of batch/run.py vs Beam's stock per-element path, and the
model loaded in the pipeline vs called through the online gateway (the comparison of
Google's "Comparing machine learning models for predictions in Cloud Dataflow pipelines").

All run on the same natality JSON-lines input on the same local runner, one after the
other in this run; each at 100K and 1M rows, and the marginal rate
(900K rows / difference of the two wall times) excludes start-up and model loading. The
gateway shares the machine's cores with the pipeline.

    python -m loadtests.bench_batch [--small 100000] [--large 1000000]
"""
from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from loadtests.processes import REPO, Server, free_port, log

MODEL = REPO / "models" / "natality"


@dataclass(frozen=True)
class PipelineTiming:
    seconds: dict[int, float]
    """Rows in the input -> wall seconds of the whole run."""
    marginal_rows_per_s: float
    """Extra rows / extra seconds between the two sizes (NaN when too small to tell)."""


def write_input(path: Path, rows: int) -> None:
    from serving.examples import natality

    columns = {k: v.tolist() for k, v in natality.sample_rows(rows, seed=11).items()}
    with path.open("wb") as handle:
        for i in range(rows):
            handle.write(orjson.dumps({"id": i, **{k: columns[k][i] for k in columns}}) + b"\n")


@contextlib.contextmanager
def gateway(log_dir: Path) -> Iterator[str]:
    """The online gateway serving natality over gRPC, for the 'microservice' approach;
    yields its gRPC address once it is ready."""
    grpc_port, rest_port = free_port(), free_port()
    argv = [sys.executable, "-m", "serving", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
            "--model_name=natality", f"--model_base_path={MODEL}", "--enable_batching",
            "--batching_parameters_file=serving/examples/batching.config"]
    with Server("gateway", argv, log_dir / "gateway.log", rest_port):
        yield f"127.0.0.1:{grpc_port}"


def timed(argv: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> dict[str, PipelineTiming]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with gateway(work) as service:
            inputs = {n: work / f"rows-{n}.jsonl" for n in (args.small, args.large)}
            for rows, path in inputs.items():
                write_input(path, rows)
            setups: dict[str, Callable[[int], list[str]]] = {
                "batch/run.py (chunked, columnar)": lambda n: [
                    sys.executable, "batch/run.py", "--input", str(inputs[n]), "--output",
                    str(work / f"ours-{n}" / "out"), "--model_base_path", str(MODEL),
                    "--key_field", "id"],
                "batch/run.py calling the gateway (microservice)": lambda n: [
                    sys.executable, "batch/run.py", "--input", str(inputs[n]), "--output",
                    str(work / f"service-{n}" / "out"), "--prediction_service", service,
                    "--model_name", "natality", "--key_field", "id"],
                "stock per-element RunInference": lambda n: [
                    sys.executable, "-m", "loadtests.baselines.stock_beam", str(inputs[n]),
                    str(work / f"stock-{n}" / "out"), str(MODEL)],
            }
            results = {}
            for name, command in setups.items():
                seconds = {n: timed(command(n)) for n in inputs}
                spent = seconds[args.large] - seconds[args.small]
                marginal = (args.large - args.small) / spent if spent > 0 else float("nan")
                results[name] = PipelineTiming(seconds, marginal)
                log(f"{name}: {seconds[args.small]:.1f} s for {args.small}, "
                    f"{seconds[args.large]:.1f} s for {args.large} rows")
    ours, _, stock = (r.marginal_rows_per_s for r in results.values())
    print("\n### batch prediction, natality, local FnApiRunner\n")
    print(f"| pipeline | {args.small} rows s | {args.large} rows s | marginal rows/s |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r.seconds[args.small]:.1f} | {r.seconds[args.large]:.1f} "
              f"| {r.marginal_rows_per_s:,.0f} |")
    print(f"\nbatch/run.py vs stock: **{ours / stock:.1f}×** (goal ≥ 10×)")
    return results


if __name__ == "__main__":
    main()
