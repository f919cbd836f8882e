"""Fixtures shared by the runtime tests."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

TIMEOUT_S = 120  # a bound for a broken test, never reached by a passing one


def _two_signatures(folder: Path):
    """A TF2 SavedModel saved under ``folder``/1 and loaded: a ``tf.Module`` whose two
    signatures, ``dot`` and ``scale``, read one variable, w = [2, 3]."""
    import tensorflow as tf

    from serving.runtime import savedmodel

    class Two(tf.Module):
        def __init__(self):
            self.w = tf.Variable([2.0, 3.0])

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def dot(self, x):
            return {"y": tf.linalg.matvec(x, self.w)}

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def scale(self, x):
            return {"y": x * self.w}

    module = Two()
    tf.saved_model.save(module, str(folder / "1"), signatures={"dot": module.dot, "scale": module.scale})
    return savedmodel.load(folder / "1")


@pytest.fixture
def two_signatures():
    """``two_signatures(folder)``: the two-signature model, saved there and loaded."""
    return _two_signatures


class Candidates:
    """The TF1 Sessions ``LoadedModel`` builds (each gets a ``closed`` flag); ``faults`` maps
    a signature name to a change made to its Session runner's answers (or a raise); the
    loader can be held (``hold``, ``entered``, ``release``) or made to fail (``fail``)."""

    def __init__(self) -> None:
        self.built: list = []
        self.faults: dict = {}
        self.entered = threading.Event()  # a loader call began
        self.release = threading.Event()  # held loader calls may go on
        self.release.set()
        self.fail: Exception | None = None
        self.active = 0
        self.most_active = 0
        self._lock = threading.Lock()

    def hold(self) -> None:
        self.release.clear()

    def wrap(self, real):
        def runners(path, defs, direct_call=True, config=None):
            with self._lock:
                self.active += 1
                self.most_active = max(self.most_active, self.active)
            self.entered.set()
            try:
                self.release.wait(TIMEOUT_S)
                if self.fail is not None:
                    raise self.fail
                session, found = real(path, defs, direct_call, config)
            finally:
                with self._lock:
                    self.active -= 1
            session.closed = False
            close = session.close

            def closing():
                session.closed = True
                close()

            session.close = closing
            self.built.append(session)
            return session, {name: self.faults[name](run) if name in self.faults else run
                             for name, run in found.items()}

        return runners


@pytest.fixture
def candidates(monkeypatch) -> Candidates:
    from serving.runtime import savedmodel

    found = Candidates()
    monkeypatch.setattr(savedmodel, "_session_runners", found.wrap(savedmodel._session_runners))
    yield found
    found.release.set()
