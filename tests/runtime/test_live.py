"""The runner chosen on a model's first live calls (serving/runtime/live.py): one test per
clause of its contract, on real SavedModels; the TF1 Session candidates are real too, held
at their loader by events or given a fault where a clause needs one. No sleeps."""
from __future__ import annotations

import gc
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorflow as tf

from serving.errors import InvalidArgument
from serving.runtime import live, savedmodel, warmup
from serving.runtime.choice import FUNCTIONS, SESSION, Evidence, RunnerChoice

TIMEOUT_S = 120  # a bound for a broken test, never reached by a passing one



class Settled:
    """``on_settled``'s calls."""

    def __init__(self) -> None:
        self.choices: list[RunnerChoice] = []

    def __call__(self, choice: RunnerChoice) -> None:
        self.choices.append(choice)


@pytest.fixture(scope="module")
def dense_path(tmp_path_factory):
    """A TF2 SavedModel with variables and no warm-up file: y = x W + b, x [None, 16]."""

    class Dense(tf.Module):
        def __init__(self):
            self.w = tf.Variable(np.random.default_rng(1).normal(size=(16, 1)).astype(np.float32))
            self.b = tf.Variable([0.5])

        @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.matmul(x, self.w) + self.b}

    module = Dense()
    path = tmp_path_factory.mktemp("dense") / "1"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


@pytest.fixture
def dense(dense_path):
    """The dense model loaded, its first 3 calls watched."""
    model = savedmodel.load(dense_path)
    settled = Settled()
    requests, evidence = warmup.requests_for(model, (2,))
    assert evidence is Evidence.SYNTHETIC
    comparison = live.watch(model, 3, requests, settled)
    return model, comparison, settled


def rows(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).uniform(-1, 1, (n, 16)).astype(np.float32)}


def settle(comparison) -> None:
    assert comparison.settled.wait(TIMEOUT_S), "the comparison did not settle"


def test_a_version_serves_from_its_functions_then_moves_once_its_calls_agree(dense, candidates, dense_path):
    model, comparison, settled = dense
    reference = tf.saved_model.load(str(dense_path)).signatures["serving_default"]
    assert model.choice.runner == FUNCTIONS and model.choice.pending
    assert model.choice.evidence is Evidence.LIVE_REQUESTS
    functions = weakref.ref(model._keepalive)
    answers = [model.run("serving_default", rows(2 + n, seed=n)) for n in range(2)]
    assert candidates.built == [] and comparison.thread is None  # no candidate before the N-th call
    answers.append(model.run("serving_default", rows(4, seed=2)))
    settle(comparison)
    for n, answer in enumerate(answers):  # what the clients got meanwhile: the functions' answers
        want = reference(**{k: tf.constant(v) for k, v in rows(2 + n, seed=n).items()})
        np.testing.assert_array_equal(answer["y"], want["y"].numpy())
    assert model.in_session and not model.choice.pending
    assert model.choice == settled.choices[0] and len(settled.choices) == 1
    assert model.choice.evidence is Evidence.LIVE_REQUESTS
    assert "its first 3 live calls were answered alike" in model.choice.reason
    assert not candidates.built[0].closed
    gc.collect()
    assert functions() is None  # the variables are held once again
    after = model.run("serving_default", rows(5, seed=9))["y"]
    np.testing.assert_allclose(after, reference(x=tf.constant(rows(5, seed=9)["x"]))["y"].numpy(), rtol=1e-5)


def test_no_answer_waits_for_the_comparison(dense, candidates):
    """Clause 1: the call that completes the window returns while the candidate's loader is
    still held, and calls keep being answered (by the functions) until it is released."""
    model, comparison, _ = dense
    candidates.hold()
    for n in range(3):
        model.run("serving_default", rows(1, seed=n))
    assert candidates.entered.wait(TIMEOUT_S)
    assert model.run("serving_default", rows(2))["y"].shape == (2, 1)  # answered meanwhile
    assert not model.in_session and model.choice.pending
    assert "compared with a TF1 Session" in model.choice.reason
    candidates.release.set()
    settle(comparison)
    assert model.in_session


def test_memory_is_bounded_by_calls_and_bytes(dense_path, candidates):
    """Clause 2: a call larger than the byte budget is left out; the comparison starts with
    the calls in once the next would overflow it; calls after the window are not kept."""
    model = savedmodel.load(dense_path)
    small = rows(2)
    small_bytes = small["x"].nbytes + model.run("serving_default", small)["y"].nbytes
    settled = Settled()
    comparison = live.watch(model, 10, [], settled, max_bytes=2 * small_bytes)
    candidates.hold()
    model.run("serving_default", rows(50))  # alone larger than the budget: left out
    assert comparison.thread is None
    model.run("serving_default", rows(2, seed=1))
    model.run("serving_default", rows(2, seed=2))
    assert comparison.thread is None
    model.run("serving_default", rows(2, seed=3))  # would overflow: the comparison starts with 2
    assert candidates.entered.wait(TIMEOUT_S)
    for n in range(5):  # after the window: not observed at all
        model.run("serving_default", rows(2, seed=10 + n))
    candidates.release.set()
    settle(comparison)
    assert "its first 2 live calls" in model.choice.reason and model.in_session


def test_candidates_are_compared_one_at_a_time(dense_path, candidates, monkeypatch):
    """Clause 2: a second version's comparison waits for the first one's turn to end."""
    turn = threading.Lock()
    waited = threading.Event()

    class Turn:
        def __enter__(self):
            if not turn.acquire(blocking=False):
                waited.set()
                turn.acquire()

        def __exit__(self, *exc):
            turn.release()

    monkeypatch.setattr(live, "_ONE_AT_A_TIME", Turn())
    first, second = (savedmodel.load(dense_path) for _ in range(2))
    comparisons = [live.watch(model, 1, [], Settled()) for model in (first, second)]
    candidates.hold()
    first.run("serving_default", rows(2))
    assert candidates.entered.wait(TIMEOUT_S)
    second.run("serving_default", rows(2))
    assert waited.wait(TIMEOUT_S)  # the second found the turn taken
    candidates.release.set()
    for comparison in comparisons:
        settle(comparison)
    assert candidates.most_active == 1 and first.in_session and second.in_session


X2 = {"x": np.array([[1.0, 2.0], [0.5, 0.25]], np.float32)}


def test_a_signature_never_called_is_tried_on_the_synthetic_requests(tmp_path, candidates, two_signatures):
    """Clause 3: only "dot" is called live; "scale" is proven on its synthetic requests."""
    model = two_signatures(tmp_path)
    comparison = live.watch(model, 2, warmup.synthetic_requests(model, (3,)), Settled())
    model.run("dot", X2)
    model.run("dot", X2)
    settle(comparison)
    assert model.in_session and model.choice.evidence is Evidence.LIVE_REQUESTS
    np.testing.assert_allclose(model.run("scale", X2)["y"], [[2.0, 6.0], [1.0, 0.75]])


def test_every_signature_moves_or_none(tmp_path, candidates, two_signatures):
    """Clause 3: "scale", never called, answers its synthetic requests differently in the
    Session: nothing moves, although every live call agreed."""
    candidates.faults["scale"] = lambda run: lambda inputs: {"y": run(inputs)["y"] * 2}
    model = two_signatures(tmp_path)
    comparison = live.watch(model, 2, warmup.synthetic_requests(model, (3,)), Settled())
    model.run("dot", X2)
    model.run("dot", X2)
    settle(comparison)
    assert not model.in_session and candidates.built[0].closed
    assert "['scale'] differently" in model.choice.reason
    none_to_try = two_signatures(tmp_path / "again")
    comparison = live.watch(none_to_try, 1, [], Settled())  # no synthetic request: "scale" unproven
    none_to_try.run("dot", X2)
    settle(comparison)
    assert not none_to_try.in_session and "for ['scale']" in none_to_try.choice.reason


def test_a_difference_closes_the_candidate(dense, candidates):
    """Clause 4."""
    model, comparison, settled = dense
    candidates.faults["serving_default"] = lambda run: lambda inputs: {"y": run(inputs)["y"] + 1e-3}
    for n in range(3):
        model.run("serving_default", rows(3, seed=n))
    settle(comparison)
    assert not model.in_session and candidates.built[0].closed
    assert settled.choices == [model.choice]
    assert model.choice == RunnerChoice(FUNCTIONS, Evidence.LIVE_REQUESTS, model.choice.reason)
    assert "answered ['serving_default'] differently" in model.choice.reason


def test_a_call_only_one_runner_refuses_is_a_difference(dense, candidates):
    """Clause 4: the functions refuse a 15-wide row the Session (given a fault) answers."""
    model, comparison, _ = dense
    candidates.faults["serving_default"] = lambda run: lambda inputs: (
        {"y": np.zeros((len(inputs["x"]), 1), np.float32)} if inputs["x"].shape[1] != 16 else run(inputs))
    model.run("serving_default", rows(2))
    with pytest.raises(InvalidArgument):
        model.run("serving_default", {"x": np.ones((2, 15), np.float32)})
    model.run("serving_default", rows(2, seed=1))
    settle(comparison)
    assert not model.in_session and candidates.built[0].closed


def test_calls_both_runners_refuse_prove_nothing(dense, candidates):
    model, comparison, _ = dense
    for _ in range(3):
        with pytest.raises(InvalidArgument):
            model.run("serving_default", {"x": np.ones((2, 15), np.float32)})
    settle(comparison)
    # the synthetic request then proves serving_default: the calls were no difference
    assert model.in_session


def test_a_loader_failure_keeps_the_functions(dense, candidates):
    """Clause 4."""
    model, comparison, settled = dense
    candidates.fail = RuntimeError("no graph here")
    for n in range(3):
        model.run("serving_default", rows(1, seed=n))
    settle(comparison)
    assert not model.in_session and candidates.built == []
    assert model.choice.reason == "TF1's loader failed: no graph here" and settled.choices == [model.choice]


def test_a_version_unloaded_mid_comparison_moves_nothing(dense, candidates):
    """Clause 5: closed while its candidate is being loaded."""
    model, comparison, settled = dense
    candidates.hold()
    for n in range(3):
        model.run("serving_default", rows(1, seed=n))
    assert candidates.entered.wait(TIMEOUT_S)
    model.close()
    candidates.release.set()
    settle(comparison)
    assert not model.in_session and candidates.built[0].closed
    assert "unloaded" in model.choice.reason and settled.choices == [model.choice]


def test_a_version_unloaded_before_its_window_fills_compares_nothing(dense, candidates):
    """Clause 5: closed first, its later calls are not observed and no candidate is built."""
    model, comparison, settled = dense
    model.run("serving_default", rows(1))
    model.close()
    for n in range(5):
        model.run("serving_default", rows(1, seed=n))
    assert comparison.thread is None and candidates.built == [] and settled.choices == []


def test_concurrent_calls_start_one_comparison(dense_path, candidates):
    """Clauses 1 and 6: calls from several executor threads at once; one comparison of the
    first N, one ``on_settled``."""
    model = savedmodel.load(dense_path)
    settled = Settled()
    comparison = live.watch(model, 5, [], settled)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda n: model.run("serving_default", rows(3, seed=n)), range(40)))
    assert all(a["y"].shape == (3, 1) for a in answers)
    settle(comparison)
    assert len(candidates.built) == 1 and len(settled.choices) == 1
    assert model.in_session and "its first 5 live calls" in model.choice.reason


def test_live_calls_zero_or_a_warmup_file_decide_at_load(models_dir, dense_path, candidates):
    at_load = savedmodel.load(dense_path)
    warmup.run(at_load, (2,), live_calls=0)
    assert at_load.in_session and at_load.choice.evidence is Evidence.SYNTHETIC and not at_load.choice.pending
    natality = savedmodel.load(models_dir / "natality" / "1")
    warmup.run(natality, (2,), live_calls=100)
    assert natality.in_session and natality.choice.evidence is Evidence.WARMUP_FILE
    watched = savedmodel.load(dense_path)
    assert warmup.run(watched, (1, 2), live_calls=100) == 2
    assert watched.choice.pending and len(candidates.built) == 2  # the warm-up's calls are not live ones
    off = savedmodel.load(dense_path)
    warmup.run(off, (2,), prefer_session=False, live_calls=100)
    assert off.choice.runner == FUNCTIONS and off.choice.evidence is Evidence.DISABLED


def test_a_tf1_model_is_never_watched(tfserving_dir):
    model = savedmodel.load(tfserving_dir / "saved_model_half_plus_two_cpu" / "00000123")
    assert live.watch(model, 3, [], Settled()) is None
    assert model.choice.runner == SESSION and model.choice.evidence is Evidence.TF1_MODEL
