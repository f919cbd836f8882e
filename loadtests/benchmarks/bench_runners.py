"""CPU per model call of a TF2 SavedModel: its restored signature functions against the
TF1 Session that ``LoadedModel.prefer_session`` moves it to, on every example model.

Each model is loaded twice: as loaded (functions) and after a warm-up that may move it
(``serving.runtime.warmup.run``). Both run the same inputs (the model's warm-up requests,
rows repeated to each size) and must answer alike before they are timed. Process CPU
(TensorFlow's own threads included), best of ``--repeat`` runs. A model that stays on its
functions is named and skipped. No server, no batcher: the model call alone.

    python -m loadtests.benchmarks.bench_runners [--models models] [--rows 1,32,256]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from serving.runtime import savedmodel, warmup

WARMUP_SIZES = (1, 8)


def model_dirs(root: Path) -> list[Path]:
    """Version 1 of each example model and each per-shape model under ``root``."""
    found = sorted(root.glob("*/1/saved_model.pb")) + sorted(root.glob("shapes/*/1/saved_model.pb"))
    return [path.parent for path in found]


def sample(model: savedmodel.LoadedModel) -> warmup.WarmupRequest:
    """The first warm-up request of the model's default signature."""
    requests = warmup.recorded_requests(model) or warmup.synthetic_requests(model, WARMUP_SIZES)
    return next(r for r in requests if r.signature_name == savedmodel.DEFAULT_SIGNATURE)


def resized(inputs: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """``inputs`` with their rows repeated (or cut) to ``rows``."""
    return {name: value[np.arange(rows) % len(value)] for name, value in inputs.items()}


def cpu_us_per_call(model: savedmodel.LoadedModel, signature: str, inputs: dict[str, np.ndarray],
                    repeat: int, seconds: float = 0.3) -> float:
    def call() -> None:
        model.run(signature, inputs)

    call()
    number = 1
    while True:  # as timeit's autorange, on process CPU
        start = time.process_time()
        for _ in range(number):
            call()
        spent = time.process_time() - start
        if spent >= seconds:
            break
        number *= 2
    best = spent / number
    for _ in range(repeat - 1):
        start = time.process_time()
        for _ in range(number):
            call()
        best = min(best, (time.process_time() - start) / number)
    return best * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--rows", default="1,32,256", help="rows per call, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = [int(part) for part in args.rows.split(",")]
    print("CPU us per model call: TF2 functions vs TF1 Session, best of", args.repeat)
    print(f"{'model':<28} {'rows':>5} {'functions':>10} {'session':>10} {'ratio':>6}")
    for path in model_dirs(args.models):
        name = str(path.relative_to(args.models).parent)
        functions = savedmodel.load(path)
        if functions.in_session:
            print(f"{name:<28} TF1 SavedModel: always a Session")
            continue
        moved = savedmodel.load(path)
        warmup.run(moved, WARMUP_SIZES)
        signature, inputs = sample(moved)
        if not moved.in_session:
            print(f"{name:<28} stays on its functions (the log says why)")
            continue
        for rows in sizes:
            batch = resized(inputs, rows)
            if not savedmodel.same_answers(functions.run(signature, batch), moved.run(signature, batch)):
                raise RuntimeError(f"{name}: the two runners answer {rows} rows differently")
            before = cpu_us_per_call(functions, signature, batch, args.repeat)
            after = cpu_us_per_call(moved, signature, batch, args.repeat)
            print(f"{name:<28} {rows:>5} {before:>10.0f} {after:>10.0f} {before / after:>5.1f}x", flush=True)


if __name__ == "__main__":
    main()
