"""The gateway answering keyed Predict instances from a real prediction store (a SQLite file,
a real redis-server), the model answering the rest (issue 14, part 2).

Entries are either the model's own outputs (written with ``encode_rows`` of ``model.run`` on
the same rows, so a store answer can be compared byte for byte with the model's), or
deliberately other values, so a hit shows in the answer. The model is called on the same
rows in the same call as the reference it is compared with, since float results may differ
in the last digit with the batch's composition.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.examples.natality import INPUTS, IS_MALE_VALUES, PLURALITY_VALUES
from serving.precomputed import open_store
from serving.precomputed.api import PredictionStore
from serving.precomputed.codec import encode_rows
from serving.settings import BatchingConfig, ModelConfig, Settings
from tests.conftest import Gate, Gateway, RedisServer, free_port, wait_until

NATALITY = "natality"
OUTPUT = "weight_pounds"
FIELD = "id"
OUTCOMES = ("hit", "miss", "fallback")


@dataclass
class Served:
    """A gateway serving natality and the held model from ``store`` (``redis``: its server,
    None for SQLite)."""

    gateway: Gateway
    store: PredictionStore
    redis: RedisServer | None


def settings_for(url: str, models: tuple[ModelConfig, ...], **overrides: Any) -> dict[str, Any]:
    return dict(port=free_port(), rest_api_port=free_port(), models=models, enable_batching=True,
                batching=BatchingConfig(max_batch_size=32, batch_timeout_micros=2000, num_batch_threads=1),
                prediction_store=url, prediction_key_field=FIELD) | overrides


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def served(request, tmp_path_factory, models_dir, held_model) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp(request.param)
    redis = RedisServer(folder) if request.param == "redis" else None
    url = redis.url if redis else f"sqlite://{folder / 'predictions.db'}"
    models = (ModelConfig(name=NATALITY, base_path=str(models_dir / NATALITY)),
              ModelConfig(name="held", base_path=str(held_model[0])))
    try:
        with (Gateway(Settings(**settings_for(url, models, prediction_store_timeout_ms=5000))) as gateway,
              contextlib.closing(open_store(url, timeout_s=5)) as store):
            yield Served(gateway, store, redis)
    finally:
        if redis is not None:
            redis.stop()


# -- requests and entries ----------------------------------------------------------------

def natality_rows(n: int, start: int) -> list[dict[str, Any]]:
    return [{"is_male": IS_MALE_VALUES[i % 2], "mother_age": 20.0 + i % 25,
             "plurality": PLURALITY_VALUES[i % 6], "gestation_weeks": 30.0 + i % 12}
            for i in range(start, start + n)]


def as_arrays(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {name: np.array([row[name].encode() for row in rows], dtype=object)
            if isinstance(rows[0][name], str) else np.array([row[name] for row in rows], np.float32)
            for name in INPUTS}


def body(rows: list[dict[str, Any]], keys: list[Any] | None = None, form: str = "row") -> dict[str, Any]:
    if form == "row":
        return {"instances": rows if keys is None else [{**row, FIELD: key} for row, key in zip(rows, keys)]}
    columns = {name: [row[name] for row in rows] for name in INPUTS}
    return {"inputs": columns if keys is None else {**columns, FIELD: keys}}


def predict(gateway: Gateway, doc: dict[str, Any], model: str = NATALITY, **headers: str) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/models/{model}:predict", json=doc, headers=headers, timeout=60)


def values(response: httpx.Response) -> list[Any]:
    assert response.status_code == 200, response.text
    doc = response.json()
    return doc["predictions"] if "predictions" in doc else doc["outputs"]


def model_outputs(gateway: Gateway, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The served natality version's own outputs for ``rows`` (one call)."""
    model = gateway.service.resolve(NATALITY).model
    return model.run("serving_default", as_arrays(rows))


def write(store: PredictionStore, keys: list[str], outputs: dict[str, np.ndarray], *,
          model: str = NATALITY, version: int = 1) -> None:
    store.put_many(model, version, list(zip(keys, encode_rows(outputs))))


def planted(*weights: float) -> dict[str, np.ndarray]:
    """Outputs no natality row has (the model answers 0.5 to 9.3 pounds)."""
    return {OUTPUT: np.array(weights, np.float32)}


def counts(gateway: Gateway, model: str = NATALITY) -> dict[str, float]:
    return {outcome: gateway.metric("tfgw_precomputed_rows_total", model=model, outcome=outcome)
            for outcome in OUTCOMES}


def since(before: dict[str, float], gateway: Gateway, model: str = NATALITY) -> dict[str, float]:
    after = counts(gateway, model)
    return {outcome: after[outcome] - before[outcome] for outcome in OUTCOMES}


# -- answers from the store ----------------------------------------------------------------

@pytest.mark.parametrize("form", ["row", "columnar"])
def test_a_store_answer_is_the_same_bytes_as_the_models(served, form):
    gateway = served.gateway
    rows = natality_rows(5, start=100)
    keys = [f"same-{form}-{i}" for i in range(5)]
    write(served.store, keys, model_outputs(gateway, rows))
    from_model = predict(gateway, body(rows, form=form))
    before = counts(gateway)

    from_store = predict(gateway, body(rows, keys, form))

    assert from_model.status_code == from_store.status_code == 200, from_store.text
    assert from_store.content == from_model.content
    assert since(before, gateway) == {"hit": 5, "miss": 0, "fallback": 0}


@pytest.mark.parametrize("form", ["row", "columnar"])
def test_hits_and_misses_in_one_request_come_back_in_request_order(served, form):
    gateway = served.gateway
    rows = natality_rows(6, start=200)
    keys = [f"mixed-{form}-{i}" for i in range(6)]
    write(served.store, [keys[1], keys[4]], planted(1001.0, 1004.0))
    before = counts(gateway)

    answer = values(predict(gateway, body(rows, keys, form)))

    # The key field is gone before the model sees the inputs: natality refuses unknown ones.
    assert predict(gateway, {"instances": [{**rows[0], "other": "x"}]}).status_code == 400
    assert since(before, gateway) == {"hit": 2, "miss": 4, "fallback": 0}
    computed = values(predict(gateway, body([rows[i] for i in (0, 2, 3, 5)], form=form)))
    assert answer == [computed[0], 1001.0, computed[1], computed[2], 1004.0, computed[3]]


def test_entries_of_other_versions_are_never_served(served):
    gateway = served.gateway
    rows = natality_rows(3, start=300)
    keys = [f"versions-{i}" for i in range(3)]
    assert gateway.service.resolve(NATALITY).version == 1
    write(served.store, keys, planted(2000.0, 2001.0, 2002.0), version=0)
    write(served.store, keys, planted(3000.0, 3001.0, 3002.0), version=2)
    before = counts(gateway)

    answer = predict(gateway, body(rows, keys))

    assert answer.content == predict(gateway, body(rows)).content
    assert since(before, gateway) == {"hit": 0, "miss": 3, "fallback": 0}


def test_a_batch_of_hits_never_reaches_the_model(served, gate: Gate):
    """The held model would wait at the closed gate for any row with ``hold``."""
    gateway = served.gateway
    keys = [f"held-{i}" for i in range(3)]
    served.store.put_many("held", 1, list(zip(keys, encode_rows({"y": np.array([7.0, 8.0, 9.0], np.float32)}))))
    instances = [{"x": float(i), "hold": 1, FIELD: key} for i, key in enumerate(keys)]

    answer = predict(gateway, {"instances": instances}, model="held", **{"x-request-timeout-ms": "20000"})

    assert values(answer) == [7.0, 8.0, 9.0]
    assert gate.waiting == 0


def test_one_store_round_trip_per_merged_batch(served, gate: Gate):
    """A first request holds the model at the gate while twelve more queue; they run as
    one merged batch, which asks the store once (Redis: one MGET) for all its keys."""
    gateway = served.gateway
    keys = [f"trip-{i}" for i in range(12)]
    stored = {key: 100.0 + i for i, key in enumerate(keys) if i % 2 == 0}
    served.store.put_many("held", 1, list(zip(stored, encode_rows({"y": np.array(list(stored.values()), np.float32)}))))
    batches_before = gateway.metric("tfgw_batch_size_rows_count", model="held")
    lookups_before = gateway.metric("tfgw_precomputed_lookup_seconds_count", model="held")
    if served.redis is not None:
        redis_client(served.redis).config_resetstat()

    with ThreadPoolExecutor(len(keys) + 1) as pool:
        blocker = pool.submit(predict, gateway, {"instances": [{"x": 0.5, "hold": 1, FIELD: "trip-blocker"}]}, "held")
        wait_until(lambda: gate.waiting == 1, timeout=30, what="the first request at the gate")
        queued = [pool.submit(predict, gateway, {"instances": [{"x": float(i), "hold": 0, FIELD: key}]}, "held")
                  for i, key in enumerate(keys)]
        wait_until(lambda: gateway.metric("tfgw_queue_depth_rows", model="held") == len(keys), timeout=30,
                   what="twelve requests queued behind the gate")
        gate.open()
        answers = [values(future.result()) for future in queued]
        assert values(blocker.result()) == [1.5]

    assert answers == [[stored.get(key, i + 1.0)] for i, key in enumerate(keys)]
    batches = gateway.metric("tfgw_batch_size_rows_count", model="held") - batches_before
    assert 2 <= batches < len(keys) + 1, f"{batches} batches for {len(keys) + 1} requests"
    assert gateway.metric("tfgw_precomputed_lookup_seconds_count", model="held") - lookups_before == batches
    if served.redis is not None:
        assert mget_calls(served.redis) == batches


def redis_client(server: RedisServer):
    import redis

    return redis.Redis.from_url(server.url)


def mget_calls(server: RedisServer) -> int:
    with redis_client(server) as client:
        return client.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)


# -- gRPC --------------------------------------------------------------------------------

def grpc_request(rows: list[dict[str, Any]], keys: np.ndarray | None = None) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = NATALITY
    for name, array in as_arrays(rows).items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
    if keys is not None:
        request.inputs[FIELD].CopyFrom(tf.make_tensor_proto(keys))
    return request


@pytest.fixture
def stub(served):
    with grpc.insecure_channel(served.gateway.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def test_grpc_keys_as_strings_or_integers(served, stub):
    gateway = served.gateway
    rows = natality_rows(3, start=400)
    texts = [f"grpc-{i}" for i in range(3)]
    write(served.store, texts, model_outputs(gateway, rows))
    write(served.store, ["4001"], planted(4001.0))
    before = counts(gateway)

    from_store = stub.Predict(grpc_request(rows, np.array([t.encode() for t in texts], dtype=object)), timeout=30)
    from_model = stub.Predict(grpc_request(rows), timeout=30)
    mixed = stub.Predict(grpc_request(rows[:2], np.array([4000, 4001], np.int64)), timeout=30)

    assert from_store.outputs == from_model.outputs
    computed = stub.Predict(grpc_request(rows[:1]), timeout=30).outputs[OUTPUT]
    assert tf.make_ndarray(mixed.outputs[OUTPUT]).tolist() == [tf.make_ndarray(computed)[0], 4001.0]
    assert since(before, gateway) == {"hit": 4, "miss": 1, "fallback": 0}


# -- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "described"), [
    (1.5, "got float 1.5"), (True, "got bool True"), (None, "got NoneType None"), (["a"], "got list"),
    ({"a": 1}, "got dict"),
])
def test_a_key_of_the_wrong_type_is_refused_naming_the_field(served, stub, key, described):
    rows = natality_rows(2, start=500)
    for form in ("row", "columnar"):
        refused = predict(served.gateway, body(rows, ["fine", key], form))
        assert refused.status_code == 400
        message = refused.json()["error"]
        assert f"Key field '{FIELD}'" in message and described in message and "instance 1" in message
    with pytest.raises(grpc.RpcError) as failed:
        stub.Predict(grpc_request(rows, np.array([1.5, 2.5], np.float32)), timeout=30)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"Key field '{FIELD}'" in failed.value.details()


def test_keys_that_are_not_one_per_instance_are_refused(served, stub):
    rows = natality_rows(3, start=600)
    some = predict(served.gateway, {"instances": [{**rows[0], FIELD: "a"}, rows[1], {**rows[2], FIELD: "c"}]})
    assert some.status_code == 400
    assert some.json()["error"].startswith(f"Key field '{FIELD}' is missing from instance 1")
    short = predict(served.gateway, body(rows, ["a", "b"], "columnar"))
    assert short.status_code == 400 and "has 2 keys for 3 instances" in short.json()["error"]
    not_a_list = predict(served.gateway, {"inputs": {**body(rows, form="columnar")["inputs"], FIELD: "a"}})
    assert not_a_list.status_code == 400 and "must be a list" in not_a_list.json()["error"]
    with pytest.raises(grpc.RpcError) as failed:
        stub.Predict(grpc_request(rows, np.array([b"a"], dtype=object)), timeout=30)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "has 1 keys for 3 instances" in failed.value.details()


def test_a_request_without_keys_goes_to_the_model_without_a_lookup(served):
    gateway = served.gateway
    before, lookups = counts(gateway), gateway.metric("tfgw_precomputed_lookup_seconds_count", model=NATALITY)
    assert len(values(predict(gateway, body(natality_rows(2, start=700))))) == 2
    assert since(before, gateway) == {"hit": 0, "miss": 0, "fallback": 0}
    assert gateway.metric("tfgw_precomputed_lookup_seconds_count", model=NATALITY) == lookups


# -- a store that fails ----------------------------------------------------------------------

def natality_gateway(gateway_factory, models_dir, url: str, **overrides: Any) -> Gateway:
    models = (ModelConfig(name=NATALITY, base_path=str(models_dir / NATALITY)),)
    return gateway_factory(**settings_for(url, models, **overrides))


def test_a_redis_killed_mid_load_leaves_every_request_answered(redis_server, gateway_factory, models_dir):
    gateway = natality_gateway(gateway_factory, models_dir, redis_server.url,
                               batching=BatchingConfig(max_batch_size=32, batch_timeout_micros=2000,
                                                       num_batch_threads=2))
    rows = natality_rows(32, start=800)
    keys = [f"load-{i}" for i in range(32)]
    truth = model_outputs(gateway, rows)[OUTPUT]
    with contextlib.closing(open_store(redis_server.url, timeout_s=5)) as store:
        write(store, keys[::2], {OUTPUT: truth[::2]})  # half the keys are stored
    done: list[tuple[int, list[int], Any]] = []
    stop = threading.Event()

    def client(seed: int) -> None:
        picks = np.random.default_rng(seed)
        with httpx.Client(base_url=gateway.url, timeout=60) as http:
            while not stop.is_set():
                chosen = picks.choice(32, size=4, replace=False).tolist()
                try:
                    response = http.post(f"/v1/models/{NATALITY}:predict",
                                         json=body([rows[i] for i in chosen], [keys[i] for i in chosen]))
                    done.append((response.status_code, chosen, response.json()))
                except Exception as error:  # noqa: BLE001 - reported by the main thread
                    done.append((-1, chosen, repr(error)))

    before = counts(gateway)
    threads = [threading.Thread(target=client, args=(seed,), daemon=True) for seed in range(6)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(done) >= 60, timeout=120, what="60 answers before the kill")
        hits_before_kill = since(before, gateway)["hit"]
        redis_server.kill()
        killed_at = len(done)
        wait_until(lambda: len(done) >= killed_at + 100, timeout=120, what="100 answers after the kill")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)

    assert [(status, answer) for status, _, answer in done if status != 200] == []
    for _, chosen, answer in done:
        np.testing.assert_allclose(answer["predictions"], truth[chosen], rtol=1e-5)
    outcomes = since(before, gateway)
    assert hits_before_kill > 0 and outcomes["fallback"] > 0, outcomes
    assert gateway.metric("tfgw_precomputed_lookup_failures_total", model=NATALITY, reason="error") > 0


@pytest.mark.slow
def test_a_paused_redis_is_fallen_back_from_within_the_deadline(redis_server, gateway_factory, models_dir):
    """The store's own timeout (20 s) is far longer than the request's deadline (3 s): the
    lookup gives up on the deadline's account, the model answers in time, and once the
    store is back the breaker lets lookups through again."""
    gateway = natality_gateway(gateway_factory, models_dir, redis_server.url,
                               prediction_store_timeout_ms=20_000)
    rows = natality_rows(3, start=900)
    keys = [f"paused-{i}" for i in range(3)]
    with contextlib.closing(open_store(redis_server.url, timeout_s=5)) as store:
        write(store, keys, model_outputs(gateway, rows))
    deadline = {"x-request-timeout-ms": "3000"}
    from_store = predict(gateway, body(rows, keys), **deadline)
    before = counts(gateway)

    redis_server.pause()
    try:
        from_model = predict(gateway, body(rows, keys), **deadline)
        assert since(before, gateway) == {"hit": 0, "miss": 0, "fallback": 3}
    finally:
        redis_server.resume()

    assert from_model.status_code == 200 and from_model.content == from_store.content
    assert gateway.metric("tfgw_precomputed_lookup_failures_total", model=NATALITY, reason="timeout") == 1
    wait_until(lambda: predict(gateway, body(rows, keys)).status_code == 200 and since(before, gateway)["hit"] > 0,
               timeout=30, what="lookups again once the store is back")


def test_a_store_down_at_start_is_fallen_back_from(gateway_factory, models_dir):
    gateway = natality_gateway(gateway_factory, models_dir, f"redis://127.0.0.1:{free_port()}/0")
    rows = natality_rows(2, start=1000)
    before = counts(gateway)
    answer = predict(gateway, body(rows, ["a", "b"]))
    assert answer.content == predict(gateway, body(rows)).content
    assert since(before, gateway) == {"hit": 0, "miss": 0, "fallback": 2}


# -- other set-ups ---------------------------------------------------------------------------

def test_a_key_that_is_an_input_stays_one_and_outputs_keep_the_models_order(gateway_factory, models_dir, tmp_path):
    """shapes/text: ``text`` -> ``upper`` and ``length``. Its text is the key; the model,
    which still gets it, answers the first batch (the order of its two outputs is known
    only then); stored rows, written in the other order, come back in the model's."""
    url = f"sqlite://{tmp_path / 'predictions.db'}"
    text = ModelConfig(name="text", base_path=str(models_dir / "shapes" / "text"))
    gateway = gateway_factory(**settings_for(url, (text,), prediction_key_field="text"))
    doc = {"instances": [{"text": "abc"}, {"text": "xy"}, {"text": "hello"}]}
    before = counts(gateway, "text")

    computed = values(predict(gateway, doc, model="text"))  # JSON objects keep their order in dicts
    order = list(computed[0])
    stored = {"upper": np.array([b"PLANTED", b"ALSO"], dtype=object), "length": np.array([99, 98], np.int32)}
    with contextlib.closing(open_store(url, timeout_s=5)) as store:
        reordered = {name: stored[name] for name in reversed(order)}
        store.put_many("text", 1, list(zip(["abc", "xy"], encode_rows(reordered))))
    answered = values(predict(gateway, doc, model="text"))
    only_stored = values(predict(gateway, {"instances": doc["instances"][:2]}, model="text"))

    assert sorted(order) == ["length", "upper"]
    assert computed == [{"upper": "ABC", "length": 3}, {"upper": "XY", "length": 2},
                        {"upper": "HELLO", "length": 5}]
    assert answered == [{"upper": "PLANTED", "length": 99}, {"upper": "ALSO", "length": 98},
                        {"upper": "HELLO", "length": 5}]
    assert only_stored == answered[:2]
    assert all(list(row) == order for row in computed + answered + only_stored)
    assert since(before, gateway, "text") == {"hit": 4, "miss": 1, "fallback": 3}


@pytest.mark.slow
def test_in_front_of_an_upstream(gateway_factory, models_dir, tmp_path):
    upstream = gateway_factory(port=free_port(), enable_batching=False,
                               models=(ModelConfig(name=NATALITY, base_path=str(models_dir / NATALITY)),))
    url = f"sqlite://{tmp_path / 'predictions.db'}"
    front = gateway_factory(**settings_for(url, (ModelConfig(name=NATALITY, base_path="served-by-the-upstream"),),
                                           upstream=upstream.grpc_target))
    rows = natality_rows(3, start=1100)
    keys = ["up-0", "up-1", "up-2"]
    with contextlib.closing(open_store(url, timeout_s=5)) as store:
        write(store, ["up-1"], planted(5001.0))
    before = counts(front)

    answer = values(predict(front, body(rows, keys)))

    computed = values(predict(front, body([rows[0], rows[2]])))
    assert answer == [computed[0], 5001.0, computed[1]]
    assert since(before, front) == {"hit": 1, "miss": 2, "fallback": 0}
