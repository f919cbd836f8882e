"""What the gRPC tests share: a loop in a thread for servers built in the test, and the gated
model for gateway processes. Every test that asks for ``grpc_server`` (tests/conftest.py) runs
once per server, so ``pytest tests/grpc -v`` shows each row per server."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread, where servers run their methods."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="loop-thread", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


def on_loop(loop: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, T], timeout: float = 10) -> T:
    """Run ``work`` on ``loop`` and wait for its result."""
    return asyncio.run_coroutine_threadsafe(work, loop).result(timeout)


@dataclass(frozen=True)
class GatedModel:
    """A real SavedModel, y = x + 1, whose calls wait at a gate another process can open:
    a call whose ``hold`` input is N waits up to N naps of 10 ms or more, until the file
    ``gate`` exists. Warm-up requests (hold 0 or 1) pass at once or nearly."""

    base_path: Path
    gate: Path

    def open(self) -> None:
        self.gate.touch()

    def close(self) -> None:
        self.gate.unlink(missing_ok=True)


@pytest.fixture
def gated_model(built_gated_model) -> Iterator[GatedModel]:
    """The gated model, its gate shut for the test and opened after it."""
    built_gated_model.close()
    yield built_gated_model
    built_gated_model.open()


@pytest.fixture(scope="session")
def built_gated_model(tmp_path_factory) -> GatedModel:
    """Built once per session, in TensorFlow ops only (a sleep dataset in a while loop that
    looks for the file), so a gateway process loads and serves it as any model."""
    import tensorflow as tf
    from tensorflow.python.data.experimental.ops import testing

    folder = tmp_path_factory.mktemp("gated")
    gate = folder / "open"

    class Gated(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x"),
                                      tf.TensorSpec([None], tf.int64, name="hold")])
        def serve(self, x, hold):
            naps = tf.reduce_max(tf.concat([hold, tf.zeros([1], tf.int64)], 0))

            def shut(i):
                # The pattern varies with i, so the file is looked for on every turn (a
                # loop-invariant lookup would be hoisted out of the loop by grappler).
                pattern = tf.strings.join([str(gate), tf.strings.substr(tf.strings.as_string(i), 0, 0)])
                return tf.logical_and(i < naps, tf.equal(tf.size(tf.io.matching_files(pattern)), 0))

            def nap(i):
                slept = tf.data.Dataset.range(1).apply(testing.sleep(10_000)).reduce(
                    tf.constant(0, tf.int64), lambda total, one: total + one)
                return [i + 1 + slept]

            waited = tf.while_loop(shut, nap, [tf.constant(0, tf.int64)])
            with tf.control_dependencies(waited):
                return {"y": x + 1.0}

    module = Gated()
    tf.saved_model.save(module, str(folder / "gated" / "1"), signatures={"serving_default": module.serve})
    return GatedModel(folder / "gated", gate)
