"""Loading a SavedModel and running its signatures on numpy: the one TensorFlow module.

TF2 SavedModels (``tf.saved_model.save``, Keras 3 ``model.export``) load with
``tf.saved_model.load`` (Keras' ``load_model`` refuses SavedModel directories under
Keras 3) and can then move to a TF1 Session, on their warm-up (``LoadedModel.prefer_session``)
or their first live calls (``LoadedModel.settle_live``); ``LoadedModel.choice`` says which
runner serves and why. TF1 SavedModels such as TF Serving's test models run in a Session
from the start. Signature
metadata comes from the SavedModel proto itself, so metadata answers match TF Serving's
byte for byte.
TensorFlow errors are translated into ``serving.errors`` here, at the boundary.
A version on ``gs://`` or ``s3://`` is copied to a local directory first
(``serving.runtime.storage``) and loaded from there; the copy goes when the model does.
"""
from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.errors import InvalidArgument, ServingError
from serving.runtime import storage
from serving.runtime.choice import FUNCTIONS, SESSION, Evidence, RunnerChoice
from serving.runtime.signature import STRING, SignatureSpec, TensorSpec, find_signature

log = logging.getLogger(__name__)

SERVE_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"
INIT_OP_KEY = "__saved_model_init_op"  # a pseudo-signature TF2 writes; not callable


Runner = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
Inputs = Mapping[str, np.ndarray]
Answer = dict[str, np.ndarray] | None
"""A runner's outputs for a request, or None where it refused the request."""
Verdict = tuple[frozenset[str], frozenset[str]]
"""(signatures a Session candidate answered alike, signatures it answered differently)."""


class Call(NamedTuple):
    """A request and the functions' answer to it."""

    signature_name: str
    inputs: Inputs
    answer: Answer


class CallObserver(Protocol):
    """Sees each model call's inputs and answer (``serving.runtime.live``), on the calling thread."""

    def offer(self, signature_name: str, inputs: Inputs, answer: Answer) -> None: ...


NOT_TRIED = RunnerChoice(FUNCTIONS, Evidence.DISABLED, "its TF2 functions; the TF1 Session was not tried")
IN_TF1_SESSION = RunnerChoice(SESSION, Evidence.TF1_MODEL, "a TF1 SavedModel runs in a Session, as TF Serving runs it")
_BASIS = {Evidence.WARMUP_FILE: "its {} recorded warm-up requests",
          Evidence.SYNTHETIC: "its {} synthetic warm-up requests"}


@dataclass(eq=False)
class LoadedModel:
    """A loaded SavedModel: its signatures as specs, protos and callables. ``path`` is the
    local directory it was loaded from (a copy, for a remote ``source``); ``choice`` says
    which runner serves it and why."""

    path: str
    specs: dict[str, SignatureSpec]
    signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]
    _runners: dict[str, Runner]
    _keepalive: Any  # what owns the variables: the loaded object or a session
    choice: RunnerChoice
    source: str = ""  # where the version lives (gs://, s3://, or ``path`` itself)
    direct_call: bool = True
    """A Session is called through TensorFlow's internal C entry (``_session_runner``)."""
    session_config: Any = None
    """The ConfigProto of its Sessions (``serving.runtime.parallelism``); None: TensorFlow's."""
    _observer: CallObserver | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # moving vs closing
    _closed: bool = field(default=False, repr=False)

    @property
    def in_session(self) -> bool:
        """Run by a TF1 Session (else by its TF2 signature functions)."""
        return self.choice.runner == SESSION

    def signature(self, name: str) -> SignatureSpec:
        return find_signature(self.specs, name)

    def prefer_session(self, requests: Sequence[tuple[str, Inputs]],
                       evidence: Evidence = Evidence.SYNTHETIC) -> RunnerChoice:
        """Move a TF2 model to a TF1 Session, as TF Serving runs every SavedModel, if the
        Session answers ``requests`` (the warm-up, from the ``evidence`` it names) as the
        signature functions do: every signature answered at least one of them alike (floats
        to 1e-5) and none differently, where a request only one of the two refuses counts as
        different. All signatures move or none, so the model is never held twice nor its
        state split. Returns (and records in ``choice``) which runner serves it and why.

        Why: a restored function cost 0.75-2.7 ms of CPU per call at any batch size here,
        the Session 3.5-6.6x less (``make bench-runners``). Why tried, not assumed: TF1's
        loader does not restore every TF2 model (a Keras 3 export of our image classifier
        loses half its variables). While it is tried, the model's variables are in memory
        twice.
        """
        if self.in_session:
            return self.choice
        return self._try_session(evidence, _BASIS[evidence].format(len(requests)),
                                 lambda candidates: compare(candidates, self._answered(requests)))

    def settle_live(self, calls: Sequence[Call], fallback: Iterable[tuple[str, Inputs]]) -> RunnerChoice:
        """``prefer_session`` on live ``calls`` (the functions' answers as clients got
        them; run off the request path, ``serving.runtime.live``). A signature they leave
        unproven (never called, or only with requests both runners refuse) is tried on the
        ``fallback`` (synthetic) requests as at load, so all signatures still move or none.
        A model closed meanwhile moves nothing."""

        def verdict(candidates: Mapping[str, Runner]) -> Verdict:
            agreed, differed = compare(candidates, calls, self._is_closed)
            rest = set(self._runners) - agreed
            if differed or not rest:
                return agreed, differed
            more_agreed, more_differed = compare(
                candidates, self._answered([r for r in fallback if r[0] in rest]), self._is_closed)
            return agreed | more_agreed, more_differed

        return self._try_session(Evidence.LIVE_REQUESTS, f"its first {len(calls)} live calls", verdict)

    def observe_calls(self, observer: CallObserver | None) -> None:
        """Hand every later call's inputs and answer to ``observer`` (None: stop)."""
        with self._lock:
            self._observer = None if self._closed else observer

    def close(self) -> None:
        """The version is unloaded: calls are no longer observed, and a Session candidate
        still being compared is closed instead of adopted."""
        with self._lock:
            self._closed = True
            self._observer = None

    def _is_closed(self) -> bool:
        return self._closed

    def _answered(self, requests: Iterable[tuple[str, Inputs]]) -> Iterator[Call]:
        for name, inputs in requests:
            if name in self._runners:
                yield Call(name, inputs, _answer(self._runners[name], inputs))

    def _try_session(self, evidence: Evidence, basis: str,
                     verdict: Callable[[Mapping[str, Runner]], Verdict]) -> RunnerChoice:
        """Build a Session candidate, judge it with ``verdict`` and adopt it or close it."""
        if self._closed:
            return self._settle(RunnerChoice(FUNCTIONS, evidence, "not tried: the version was unloaded"))
        try:
            defs = {name: self.signature_defs[name] for name in self._runners}
            session, candidates = _session_runners(self.path, defs, self.direct_call, self.session_config)
        except Exception as error:  # noqa: BLE001 - any failure leaves the functions in place
            return self._settle(RunnerChoice(FUNCTIONS, evidence, f"TF1's loader failed: {error}"))
        adopted = False
        try:
            agreed, differed = verdict(candidates)
            choice = _choose(set(self._runners), agreed, differed, evidence, basis)
            if choice.runner != SESSION:
                return self._settle(choice)
            settled = self._settle(choice, session, candidates)
            adopted = settled.runner == SESSION
            return settled
        except Exception as error:  # noqa: BLE001 - a comparison that breaks moves nothing
            log.exception("comparing %s with a TF1 Session failed", self.path)
            return self._settle(RunnerChoice(FUNCTIONS, evidence, f"the comparison failed: {error}"))
        finally:
            if not adopted:
                session.close()

    def _settle(self, choice: RunnerChoice, session: Any = None,
                runners: dict[str, Runner] | None = None) -> RunnerChoice:
        """Record ``choice`` and, for the Session, move to its ``session`` and ``runners``
        (in-flight calls finish on the runner they started with); a closed model moves
        nothing. Returns the choice recorded."""
        with self._lock:
            if self._closed:
                choice = RunnerChoice(FUNCTIONS, choice.evidence, "unloaded before the choice was made")
            elif choice.runner == SESSION and runners is not None:
                self._runners, self._keepalive = runners, session
            self.choice = choice
        return choice

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray],
            deadline: float | None = None) -> dict[str, np.ndarray]:
        """Run one signature on numpy inputs (called from executor threads).

        ``deadline`` is accepted for the ``Model`` protocol; a running TensorFlow call
        cannot be interrupted, so expired requests are dropped before they run instead.
        An observer (a live comparison) sees the inputs and the answer, refusals included.
        """
        runner = self._runners.get(signature_name)
        if runner is None:
            find_signature(self.specs, signature_name)  # raises TF Serving's error for it
        observer = self._observer
        try:
            outputs = runner(inputs)
        except (tf.errors.OpError, TypeError, ValueError) as error:
            if observer is not None:
                observer.offer(signature_name, inputs, None)
            raise _translated(error) from None
        if observer is not None:
            observer.offer(signature_name, inputs, outputs)
        return outputs


def _translated(error: Exception) -> ServingError:
    """A runner's failure as our error: TensorFlow's invalid arguments and Python's type and
    value errors (feeds that do not fit) are the client's; other TensorFlow errors the model's."""
    if isinstance(error, tf.errors.InvalidArgumentError):
        return InvalidArgument(error.message)
    if isinstance(error, tf.errors.OpError):
        return ServingError(f"Model execution failed: {error.message}")
    return InvalidArgument(str(error))


def load(path: str | os.PathLike, *, direct_call: bool = True,
         session_config: Any = None) -> LoadedModel:
    """Load the SavedModel in ``path`` (one version directory); ``direct_call``: how a TF1
    Session is called (``_session_runner``, ``--tf_session_direct_call``); ``session_config``:
    its Sessions' ConfigProto (``serving.runtime.parallelism.session_config``).

    TF2 SavedModels (``tf.saved_model.save``, Keras 3 export) run through their restored
    signature functions until ``prefer_session`` moves them. TF1 SavedModels run in a graph
    Session, as TF Serving runs them: TF2's loader cannot restore some of them (TF
    Serving's half_plus_three among them) and would check their feed shapes, which TF
    Serving does not. Callers check shapes against the signature where they must
    (``SignatureSpec.validate``); neither runner relies on it.
    """
    source = os.fspath(path)
    local = storage.local_copy(source)
    try:
        model = _load_local(local, direct_call, session_config)
    except BaseException:
        storage.remove_copy(local, source)
        raise
    model.source = source
    if local != source:  # the local copy lives as long as the model: removed once it is dropped
        weakref.finalize(model, storage.remove_copy, local, source)
    return model


def _load_local(path: str, direct_call: bool, session_config: Any) -> LoadedModel:
    meta_graph = _serving_meta_graph(path)
    defs = dict(meta_graph.signature_def)  # all of them, for metadata (as TF Serving answers)
    callable_defs = {name: d for name, d in defs.items() if name != INIT_OP_KEY}
    specs = {name: spec_from_signature_def(name, d) for name, d in callable_defs.items()}
    if meta_graph.object_graph_def.nodes:
        root = tf.saved_model.load(path, tags=[SERVE_TAG])
        runners = {name: _function_runner(fn) for name, fn in root.signatures.items()}
        return LoadedModel(path, specs, defs, runners, root, NOT_TRIED, direct_call=direct_call,
                           session_config=session_config)
    session, runners = _session_runners(path, callable_defs, direct_call, session_config)
    return LoadedModel(path, specs, defs, runners, session, IN_TF1_SESSION, direct_call=direct_call,
                       session_config=session_config)


def _function_runner(function: Any) -> Runner:
    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = function(**{name: tf.constant(value) for name, value in inputs.items()})
        return {name: value.numpy() for name, value in outputs.items()}

    return run


def _session_runners(path: str, defs: Mapping[str, meta_graph_pb2.SignatureDef],
                     direct_call: bool = True, config: Any = None) -> tuple[Any, dict[str, Runner]]:
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=config)
    try:
        with graph.as_default():
            tf.compat.v1.saved_model.loader.load(session, [SERVE_TAG], path)
        return session, {name: _session_runner(session, d, direct_call) for name, d in defs.items()}
    except BaseException:
        session.close()
        raise


def _session_runner(session: Any, signature_def: meta_graph_pb2.SignatureDef, direct_call: bool) -> Runner:
    """One signature on ``session``. ``direct_call``: through the C entry ``Session.run``
    itself uses (``_call_tf_sessionrun``, not TensorFlow's public API), as TF Serving's
    ``Session::Run`` runs it: without the Python-only check of feed shapes that
    ``Session.run`` adds, which TF Serving does not make (half_plus_two is fed [3] for a
    declared [-1, 1] in TF Serving's own tests). Otherwise the public ``Session.run``
    (``--tf_session_direct_call=false``), which refuses such feeds. TensorFlow is pinned to the
    minor CI tests; tests/runtime/test_session_call.py fails first when the C entry moves."""
    input_keys = sorted(signature_def.inputs)
    output_keys = sorted(signature_def.outputs)
    tensor = session.graph.get_tensor_by_name
    feeds = [tensor(signature_def.inputs[k].name) for k in input_keys]
    fetches = [tensor(signature_def.outputs[k].name) for k in output_keys]
    expected = frozenset(input_keys)
    if direct_call:
        call = session._call_tf_sessionrun
        feeds = [t._as_tf_output() for t in feeds]
        fetches = [t._as_tf_output() for t in fetches]

        def session_run(feed: dict) -> list[np.ndarray]:
            return call(None, feed, fetches, [], None)
    else:
        def session_run(feed: dict) -> list[np.ndarray]:
            return session.run(fetches, feed_dict=feed)

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Callers that skip SignatureSpec.validate (warm-up records) still get a clear error.
        if inputs.keys() != expected:
            raise InvalidArgument(f"Signature inputs are {sorted(expected)}; got {sorted(inputs)}")
        values = session_run({f: inputs[k] for f, k in zip(feeds, input_keys)})
        return dict(zip(output_keys, values))

    return run


def compare(candidates: Mapping[str, Runner], calls: Iterable[Call],
            stop: Callable[[], bool] = lambda: False) -> Verdict:
    """(agreed, differed): the signatures whose candidate answered at least one call as the
    functions did and none differently, and those it answered differently. A call both
    refuse proves nothing (a synthetic input may mean nothing to the model); one that only
    one of them refuses is a difference. ``stop`` ends the comparison early."""
    agreed: set[str] = set()
    differed: set[str] = set()
    for name, inputs, expected in calls:
        if stop():
            break
        if name not in candidates or name in differed:
            continue
        got = _answer(candidates[name], inputs)
        if expected is None and got is None:
            continue
        same = expected is not None and got is not None and same_answers(expected, got)
        (agreed if same else differed).add(name)
    return frozenset(agreed - differed), frozenset(differed)


def _choose(signatures: set[str], agreed: frozenset[str], differed: frozenset[str], evidence: Evidence,
            basis: str) -> RunnerChoice:
    """The Session only if every signature agreed and none differed (all or none)."""
    if differed:
        return RunnerChoice(FUNCTIONS, evidence, f"the TF1 Session answered {sorted(differed)} differently "
                            f"from the functions on {basis}")
    unproven = sorted(signatures - agreed)
    if unproven:
        return RunnerChoice(FUNCTIONS, evidence, f"none of {basis} was answered alike by the TF1 Session "
                            f"for {unproven}")
    return RunnerChoice(SESSION, evidence, f"{basis} were answered alike by the TF1 Session")


def _answer(runner: Runner, inputs: Inputs) -> Answer:
    try:
        return runner(inputs)
    except Exception:  # noqa: BLE001 - a refusal, compared by the caller
        return None


def same_answers(expected: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> bool:
    """The same outputs, shapes and dtypes; floats equal to 1e-5 (the Session's kernels may
    round the last bit differently: 2e-7 seen on natality)."""
    if expected.keys() != got.keys():
        return False
    for name, want in expected.items():
        have = np.asarray(got[name])
        if have.shape != want.shape or have.dtype != want.dtype:
            return False
        if want.dtype.kind in "fc":
            if not np.allclose(have, want, rtol=1e-5, atol=1e-7, equal_nan=True):
                return False
        elif not np.array_equal(have, want):
            return False
    return True


def _serving_meta_graph(path: str) -> meta_graph_pb2.MetaGraphDef:
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(storage.read_bytes(os.path.join(path, "saved_model.pb")))
    for meta_graph in proto.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return meta_graph
    raise ServingError(f"No MetaGraphDef tagged '{SERVE_TAG}' in {path}")


def spec_from_signature_def(name: str, signature_def: meta_graph_pb2.SignatureDef) -> SignatureSpec:
    inputs = {key: _tensor_spec(key, info) for key, info in signature_def.inputs.items()}
    outputs = {key: _tensor_spec(key, info) for key, info in signature_def.outputs.items()}
    return SignatureSpec(name, signature_def.method_name, inputs, outputs, tuple(sorted(inputs)))


def _tensor_spec(name: str, info: meta_graph_pb2.TensorInfo) -> TensorSpec:
    dtype = tf.dtypes.as_dtype(info.dtype)
    np_dtype = STRING if dtype == tf.string else np.dtype(dtype.as_numpy_dtype)
    shape = info.tensor_shape
    known = info.HasField("tensor_shape") and not shape.unknown_rank
    dims = tuple(None if d.size < 0 else d.size for d in shape.dim) if known else None
    return TensorSpec(name, np_dtype, dims, types_pb2.DataType.Name(info.dtype))
