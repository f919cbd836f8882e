"""``make bench-batch``: rows/s of batch/run.py vs Beam's stock per-element path.

Two tables, every pipeline run in this process on the local FnApiRunner, one after the other:

1. natality (scalar inputs, JSON lines), 100K and 1M rows: ours, ours calling the online
   gateway instead of loading the model (the comparison of Google's "Comparing machine
   learning models for predictions in Cloud Dataflow pipelines"), and stock.
2. every tensor shape (``serving.examples.shapes``: [None], [None, 1], [None, 16] with two
   outputs, strings, b64 bytes) x every input format (JSON lines, Parquet, CSV, TFRecord of
   tf.Example): ours vs stock. The input is one file of ``--rows`` rows read once (small run)
   or as several hard-linked copies (large run).

The rate compared is the marginal one (extra rows / extra seconds between the small and the
large run), which excludes start-up and model loading. The gateway shares the machine's
cores with the pipeline.

    python -m loadtests.benchmarks.bench_batch [--small 100000] [--large 1000000] [--rows 100000]
        [--shapes vec1 ...] [--formats jsonl ...] [--skip_natality]
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from loadtests.support.processes import REPO, Server, free_port, log
from serving.examples import shapes

MODEL = REPO / "models" / "natality"
SHAPE_MODELS = REPO / "models" / shapes.FOLDER
FORMATS = ("jsonl", "parquet", "csv", "tfrecord")
GOALS = {"jsonl": 10.0, "parquet": 10.0, "csv": 5.0, "tfrecord": 5.0}
"""Ours / stock marginal rows/s wanted, by input format (issue 13, goal 4)."""
SUFFIX = {"jsonl": ".jsonl", "parquet": ".parquet", "csv": ".csv", "tfrecord": ".tfrecord"}


@dataclass(frozen=True)
class PipelineTiming:
    seconds: dict[int, float]
    """Rows in the input -> wall seconds of the whole run."""
    marginal_rows_per_s: float
    """Extra rows / extra wall seconds between the two sizes (NaN when too small to tell)."""
    marginal_rows_per_cpu_s: float = float("nan")
    """The same per CPU second of this process (all its threads): steadier than wall time
    on a busy machine, for pipelines that run in this process."""


@dataclass(frozen=True)
class ShapeResult:
    shape: str
    input_format: str
    ours: PipelineTiming
    stock: PipelineTiming

    @property
    def ratio(self) -> float:
        return self.ours.marginal_rows_per_s / self.stock.marginal_rows_per_s

    @property
    def cpu_ratio(self) -> float:
        return self.ours.marginal_rows_per_cpu_s / self.stock.marginal_rows_per_cpu_s


def timing(run: Callable[[int], object], sizes: tuple[int, int]) -> PipelineTiming:
    """Wall and CPU seconds of ``run(rows)`` at both sizes, and the marginal rates between them.

    A first, untimed run at the small size pays this process's one-time costs (imports,
    tracing) so that they do not count against either size.
    """
    run(sizes[0])
    seconds, cpu = {}, {}
    for rows in sizes:
        started, cpu_started = time.monotonic(), time.process_time()
        run(rows)
        seconds[rows], cpu[rows] = time.monotonic() - started, time.process_time() - cpu_started
    small, large = sizes

    def rate(spent: float) -> float:
        return (large - small) / spent if spent > 0 else float("nan")

    return PipelineTiming(seconds, rate(seconds[large] - seconds[small]), rate(cpu[large] - cpu[small]))


# --- natality ---------------------------------------------------------------------------------

def write_natality(path: Path, rows: int) -> None:
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


def bench_natality(work: Path, small: int, large: int) -> dict[str, PipelineTiming]:
    from batch.run import main as run_batch
    from loadtests.baselines.stock_beam import main as run_stock

    inputs = {n: work / f"rows-{n}.jsonl" for n in (small, large)}
    for rows, path in inputs.items():
        write_natality(path, rows)
    with gateway(work) as service:
        setups: dict[str, Callable[[int], object]] = {
            "batch/run.py (chunked, columnar)": lambda n: run_batch([
                "--input", str(inputs[n]), "--output", str(work / f"ours-{n}" / "out"),
                "--model_base_path", str(MODEL), "--key_field", "id"]),
            "batch/run.py calling the gateway (microservice)": lambda n: run_batch([
                "--input", str(inputs[n]), "--output", str(work / f"service-{n}" / "out"),
                "--prediction_service", service, "--model_name", "natality", "--key_field", "id"]),
            "stock per-element RunInference": lambda n: run_stock([
                str(inputs[n]), str(work / f"stock-{n}" / "out"), str(MODEL)]),
        }
        results = {}
        for name, run in setups.items():
            results[name] = timing(run, (small, large))
            log(f"{name}: {results[name].seconds}")
    return results


def print_natality(results: dict[str, PipelineTiming], small: int, large: int) -> None:
    ours, _, stock = (r.marginal_rows_per_s for r in results.values())
    print("\n### batch prediction, natality, local FnApiRunner\n")
    print(f"| pipeline | {small} rows s | {large} rows s | marginal rows/s |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r.seconds[small]:.1f} | {r.seconds[large]:.1f} | {r.marginal_rows_per_s:,.0f} |")
    print(f"\nbatch/run.py vs stock: **{ours / stock:.1f}×** (goal ≥ 10×)")


# --- every shape x every format: the inputs -----------------------------------------------------

def _cell(key: str, value: Any) -> Any:
    """One input value as JSON carries it: lists, text, ``{"b64": ...}`` for ``_bytes``."""
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()} if key.endswith("_bytes") else value.decode()
    return value.tolist()


def write_shape_input(path: Path, shape: str, input_format: str, rows: int) -> None:
    """``rows`` rows of model ``shape``'s inputs plus an ``id`` column, in ``input_format``.

    CSV cells of list inputs hold JSON arrays, and of ``_bytes`` inputs base64 text.
    """
    inputs = shapes.sample_inputs(shape, rows, seed=7)
    if input_format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns: dict[str, Any] = {"id": pa.array(np.arange(rows))}
        for key, values in inputs.items():
            if values.dtype == object:
                columns[key] = pa.array(values.tolist(), pa.binary() if key.endswith("_bytes") else pa.string())
            elif values.ndim > 1:
                columns[key] = pa.FixedSizeListArray.from_arrays(values.ravel(), values.shape[1]).cast(
                    pa.list_(pa.float32()))
            else:
                columns[key] = pa.array(values)
        pq.write_table(pa.table(columns), path)
    elif input_format == "tfrecord":
        import tensorflow as tf

        def feature(value: Any) -> Any:
            if isinstance(value, bytes):
                return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
            return tf.train.Feature(float_list=tf.train.FloatList(value=np.ravel(value)))

        with tf.io.TFRecordWriter(str(path)) as writer:
            for i in range(rows):
                features = {"id": tf.train.Feature(int64_list=tf.train.Int64List(value=[i]))}
                features.update({key: feature(values[i]) for key, values in inputs.items()})
                writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
    elif input_format == "csv":
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", *inputs])
            for i in range(rows):
                cells = [_cell(key, values[i]) for key, values in inputs.items()]
                writer.writerow([i, *(c["b64"] if isinstance(c, dict) else json.dumps(c) if isinstance(c, list)
                                      else c for c in cells)])
    else:
        with path.open("wb") as handle:
            for i in range(rows):
                row = {"id": i, **{key: _cell(key, values[i]) for key, values in inputs.items()}}
                handle.write(orjson.dumps(row) + b"\n")


# --- every shape x every format: the stock pipeline ---------------------------------------------

def _stock_row(row: dict[str, Any], model: shapes.ShapeModel, input_format: str) -> dict[str, Any]:
    """A parsed row -> {"id": ..., input: numpy value}, the way a per-element DoFn does it."""
    out: dict[str, Any] = {"id": row["id"]}
    for key, (dtype, shape) in model.inputs.items():
        value = row[key]
        if input_format == "tfrecord":
            value = value if len(shape) > 1 else value[0]
        if dtype == "string":
            if key.endswith("_bytes") and input_format in ("jsonl", "csv"):
                value = base64.b64decode(value["b64"] if isinstance(value, dict) else value)
            out[key] = value.encode() if isinstance(value, str) else value
        else:
            if input_format == "csv":
                value = json.loads(value)
            out[key] = np.asarray(value, dtype=np.float32)
    return out


def _tf_example_row(record: bytes) -> dict[str, Any]:
    import tensorflow as tf

    example = tf.train.Example.FromString(record)
    row = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        row[name] = list(getattr(feature, kind).value)
    row["id"] = row["id"][0]
    return row


def _plain(value: Any) -> Any:
    value = value.tolist() if hasattr(value, "tolist") else value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _output_schema(shape: str) -> Any:
    import pyarrow as pa

    outputs = shapes.MODELS[shape].expected(**shapes.sample_inputs(shape, 2, seed=0))
    fields = [("id", pa.int64())]
    for key, values in outputs.items():
        kind = pa.string() if values.dtype == object else pa.from_numpy_dtype(values.dtype)
        fields.append((key, pa.list_(kind) if values.ndim > 1 else kind))
    return pa.schema(fields)


def run_stock(shape: str, input_format: str, pattern: str, output: str, model_dir: str) -> None:
    """Beam's stock per-element path for any shape and format: read, parse each element,
    RunInference per element (Beam batches them), format each element, write."""
    import apache_beam as beam
    from apache_beam.ml.inference.base import RunInference

    from loadtests.baselines.stock_beam import PerRowHandler

    model = shapes.MODELS[shape]
    header = ["id", *model.inputs]
    with beam.Pipeline(argv=["--runner=FnApiRunner"]) as pipeline:
        if input_format == "parquet":
            rows = pipeline | beam.io.ReadFromParquet(pattern)
        elif input_format == "tfrecord":
            rows = pipeline | beam.io.ReadFromTFRecord(pattern) | beam.Map(_tf_example_row)
        elif input_format == "csv":
            rows = (pipeline | beam.io.ReadFromText(pattern, skip_header_lines=1)
                    | beam.Map(lambda line: dict(zip(header, next(csv.reader([line]))))))
        else:
            rows = pipeline | beam.io.ReadFromText(pattern) | beam.Map(json.loads)
        results = (rows | beam.Map(_stock_row, model, input_format)
                   | RunInference(PerRowHandler(model_dir))
                   | beam.Map(lambda r: {"id": int(r.example["id"]),
                                         **{k: _plain(v) for k, v in r.inference.items()}}))
        if input_format == "parquet":
            results | beam.io.WriteToParquet(output, _output_schema(shape), file_name_suffix=".parquet")
        else:
            results | beam.Map(json.dumps) | beam.io.WriteToText(output, file_name_suffix=".jsonl")


def bench_shape(work: Path, shape: str, input_format: str, rows: int, ours_copies: int,
                stock_copies: int) -> ShapeResult:
    from batch.run import main as run_batch

    model_dir = SHAPE_MODELS / shape
    source = work / f"{shape}{SUFFIX[input_format]}"
    write_shape_input(source, shape, input_format, rows)

    def pattern(copies: int) -> str:
        folder = work / f"{shape}-{input_format}-{copies}"
        if not folder.exists():
            folder.mkdir()
            for i in range(copies):
                os.link(source, folder / f"part-{i:03d}{SUFFIX[input_format]}")
        return str(folder / f"part-*{SUFFIX[input_format]}")

    output_format = "parquet" if input_format == "parquet" else "jsonl"
    out = work / f"out-{shape}-{input_format}"
    def ours_run(n: int) -> None:
        counts = run_batch([
            "--input", pattern(n // rows), "--input_format", input_format, "--output", f"{out}/ours-{n}",
            "--output_format", output_format, "--model_base_path", str(model_dir), "--key_field", "id"])
        if counts["rows_written"] != n:
            raise RuntimeError(f"{shape} {input_format}: {counts} for {n} rows")

    ours = timing(ours_run, (rows, rows * ours_copies))
    stock = timing(lambda n: run_stock(shape, input_format, pattern(n // rows), f"{out}/stock-{n}",
                                       str(model_dir / "1")), (rows, rows * stock_copies))
    result = ShapeResult(shape, input_format, ours, stock)
    log(f"{shape} {input_format}: ours {ours.seconds} s, stock {stock.seconds} s")
    log(f"{shape} {input_format}: ours {ours.marginal_rows_per_s:,.0f} rows/s, "
        f"stock {stock.marginal_rows_per_s:,.0f} rows/s, {result.ratio:.1f}x (per CPU s: {result.cpu_ratio:.1f}x)")
    return result


def print_shapes(results: list[ShapeResult]) -> None:
    print("\n### batch prediction by input shape and format, local FnApiRunner (marginal rows/s)\n")
    print("| shape | format | batch/run.py | stock | ratio | goal | met | ratio per CPU s |")
    print("|---|---|---:|---:|---:|---:|---|---:|")
    for r in results:
        goal = GOALS[r.input_format]
        print(f"| {r.shape} | {r.input_format} | {r.ours.marginal_rows_per_s:,.0f} "
              f"| {r.stock.marginal_rows_per_s:,.0f} | {r.ratio:.1f}× | ≥ {goal:.0f}× "
              f"| {'yes' if r.ratio >= goal else 'NO'} | {r.cpu_ratio:.1f}× |")


def main(argv: list[str] | None = None) -> tuple[dict[str, PipelineTiming], list[ShapeResult]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=100_000, help="natality: rows of the small run")
    parser.add_argument("--large", type=int, default=1_000_000, help="natality: rows of the large run")
    parser.add_argument("--skip_natality", action="store_true")
    parser.add_argument("--rows", type=int, default=100_000,
                        help="shapes: rows of one input file (the small run; issue 13 measures 100K -> 1M)")
    parser.add_argument("--ours_copies", type=int, default=21, help="shapes: files of our large run")
    parser.add_argument("--stock_copies", type=int, default=4, help="shapes: files of stock's large run")
    parser.add_argument("--shapes", nargs="+", choices=list(shapes.MODELS), default=list(shapes.MODELS))
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    args = parser.parse_args(argv)
    natality: dict[str, PipelineTiming] = {}
    by_shape: list[ShapeResult] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_natality:
            natality = bench_natality(work, args.small, args.large)
        for shape in args.shapes:
            for input_format in args.formats:
                by_shape.append(bench_shape(work, shape, input_format, args.rows, args.ours_copies,
                                            args.stock_copies))
    if natality:
        print_natality(natality, args.small, args.large)
    if by_shape:
        print_shapes(by_shape)
    return natality, by_shape


if __name__ == "__main__":
    main()
