"""The gateway in front of a fleet in the middle of a rollout: two upstream pods (real
gateways on the embedded backend, standing in for TF Serving) of which only one has version
124 of TF Serving's two-version model, behind one ``--upstream`` target."""
from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter

import httpx
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from serving.errors import NotFound
from serving.settings import BatchingConfig, ModelConfig, VersionPolicy
from serving.upstream.client import UpstreamClient, resolve_target
from tests.conftest import free_port, wait_until

TWO_VERSIONS = "saved_model_half_plus_two_2_versions"


def pod(gateway_factory, base):
    """An upstream pod serving every version under ``base``, polled every 0.1 s."""
    return gateway_factory(port=free_port(), enable_batching=False, file_system_poll_wait_seconds=0.1,
                           models=(ModelConfig(name="default", base_path=str(base),
                                               version_policy=VersionPolicy(kind="all")),))


def front_of(gateway_factory, *pods, poll_s: float):
    """The gateway in front of ``pods`` (one ``ipv4:`` target), once it mirrors the fleet's
    versions: 123 and 124, though only one pod has 124."""
    target = "ipv4:" + ",".join(p.grpc_target for p in pods)
    front = gateway_factory(upstream=target, enable_batching=True, file_system_poll_wait_seconds=poll_s,
                            models=(ModelConfig(name="default", base_path="served-by-the-upstream"),),
                            batching=BatchingConfig(max_batch_size=16, batch_timeout_micros=500,
                                                    num_batch_threads=2))
    # Ready means some version is AVAILABLE; the other may still be loading its metadata.
    wait_until(lambda: versions(front) == {"123": "AVAILABLE", "124": "AVAILABLE"}, what="the fleet's versions")
    return front


@pytest.fixture
def fleet(gateway_factory, tfserving_dir, tmp_path):
    """(pod with 123 only, pod with 123 and 124, a function that rolls 124 out to the first)."""
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(tfserving_dir / TWO_VERSIONS / "00000123", old / "00000123")
    shutil.copytree(tfserving_dir / TWO_VERSIONS, new)

    def roll_out() -> None:
        shutil.copytree(tfserving_dir / TWO_VERSIONS / "00000124", tmp_path / "staging")
        (tmp_path / "staging").rename(old / "00000124")  # appears whole

    pods = pod(gateway_factory, old), pod(gateway_factory, new)
    # A pod is ready once some version is AVAILABLE; a front that does not poll (poll_s=0)
    # mirrors the fleet once, so the fleet must have settled first.
    for one, want in zip(pods, ({"123": "AVAILABLE"}, {"123": "AVAILABLE", "124": "AVAILABLE"})):
        wait_until(lambda one=one, want=want: versions(one) == want, what="the pod's versions")
    return (*pods, roll_out)


def predicts(gateway, code: str = "OK") -> float:
    return gateway.metric("tfgw_requests_total", model="default", method="predict", code=code, api="tfserving")


def versions(gateway) -> dict[str, str]:
    response = httpx.get(gateway.url + "/v1/models/default", timeout=10)
    return {s["version"]: s["state"] for s in response.json()["model_version_status"]}


def send(front, version: int, count: int) -> list[tuple[int, object]]:
    """``count`` concurrent requests for ``version``, each its own row: (status, body)."""
    async def scenario():
        async with httpx.AsyncClient(base_url=front.url, timeout=60,
                                     limits=httpx.Limits(max_connections=64)) as client:
            return await asyncio.gather(*(
                client.post(f"/v1/models/default/versions/{version}:predict", json={"instances": [float(i)]})
                for i in range(count)))

    return [(r.status_code, r.json()) for r in asyncio.run(scenario())]


def wrong(answers: list[tuple[int, object]]) -> list:
    return [(i, a) for i, a in enumerate(answers) if a != (200, {"predictions": [0.5 * i + 2]})]


@pytest.mark.slow
def test_a_version_only_some_pods_have_is_sent_only_to_them(gateway_factory, fleet):
    old, new, roll_out = fleet
    front = front_of(gateway_factory, old, new, poll_s=0.1)  # the fleet's versions, not one pod's
    before = predicts(old), predicts(new)

    for _ in range(5):  # many requests, many batches: round-robin would reach both pods
        answers = send(front, 124, 100)
        assert not wrong(answers), wrong(answers)[:5]
    assert predicts(old) == before[0] and predicts(new) > before[1]  # 124 only where it is
    assert predicts(old, "NOT_FOUND") == 0  # never sent to the pod without it

    answers = send(front, 123, 200)
    assert not wrong(answers), wrong(answers)[:5]
    assert predicts(old) > before[0]  # 123 is balanced across both pods

    roll_out()  # the old pod gets 124 as well: calls for it now reach both pods
    reached = predicts(old)

    def old_pod_serves_124() -> bool:
        answers = send(front, 124, 50)
        assert not wrong(answers), wrong(answers)[:5]
        return predicts(old) > reached

    wait_until(old_pod_serves_124, what="124 served by the pod it was rolled out to")
    assert predicts(old, "NOT_FOUND") == predicts(new, "NOT_FOUND") == 0


@pytest.mark.slow
def test_a_pod_that_drops_a_version_hands_its_calls_to_a_pod_that_has_it(gateway_factory, fleet, tmp_path):
    """The front polls its upstream only at start, so it still thinks the new pod has 124 when
    that pod has dropped it and the old pod has it instead: each call for 124 that reaches the
    new pod is answered NOT_FOUND there and goes to the other pod, within the request."""
    old, new, roll_out = fleet
    front = front_of(gateway_factory, old, new, poll_s=0)
    roll_out()
    wait_until(lambda: versions(old) == {"123": "AVAILABLE", "124": "AVAILABLE"}, what="124 on the old pod")
    shutil.rmtree(tmp_path / "new" / "00000124")
    wait_until(lambda: versions(new).get("124") == "END", what="124 gone from the new pod")
    before = predicts(old)

    answers = send(front, 124, 100)
    assert not wrong(answers), (wrong(answers)[:5], Counter(a[0] for a in answers))
    assert predicts(new, "NOT_FOUND") >= 1  # it was asked, and said no
    assert predicts(old) > before  # and the other pod answered


@pytest.mark.slow
def test_a_version_no_pod_serves_any_more_is_unavailable(gateway_factory, fleet, tmp_path):
    old, new, _ = fleet
    front = front_of(gateway_factory, old, new, poll_s=0)
    shutil.rmtree(tmp_path / "new" / "00000124")
    wait_until(lambda: versions(new).get("124") == "END", what="124 gone from the fleet")
    answer = httpx.post(front.url + "/v1/models/default/versions/124:predict",
                        json={"instances": [1.0]}, timeout=30)
    assert answer.status_code == 503 and "no pod serves version 124" in answer.json()["error"]


@pytest.mark.slow
def test_a_pod_that_goes_away_loses_no_request(gateway_factory, fleet):
    """A pod stops (as an old pod does at the end of a rollout): the calls that reach it are
    UNAVAILABLE there and go to the other pod; the breaker stays closed."""
    old, new, _ = fleet
    front = front_of(gateway_factory, old, new, poll_s=0)  # no poll: it still counts on the old pod
    answers = send(front, 123, 100)
    assert not wrong(answers) and predicts(old) > 0
    old.__exit__(None, None, None)
    before = predicts(new)
    for _ in range(3):
        answers = send(front, 123, 100)
        assert not wrong(answers), (wrong(answers)[:5], Counter(a[0] for a in answers))
    assert predicts(new) > before
    assert httpx.get(front.url + "/readyz", timeout=10).status_code == 200


def test_the_client_alone_tries_pods_it_has_no_status_from(gateway_factory, fleet):
    """Without a status query first (as a caller of the client may do) every pod may have the
    version; a NOT_FOUND then teaches the client, and it asks the fleet before giving up."""
    old, _, _ = fleet
    client = UpstreamClient(f"ipv4:{old.grpc_target}", max_message_bytes=1 << 20)
    try:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "default"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]], dtype=tf.float32))
        request.model_spec.version.value = 123
        answer = client.predict(request, time.monotonic() + 30)
        assert tf.make_ndarray(answer.outputs["y"]).tolist() == [[2.5]]
        request.model_spec.version.value = 124
        with pytest.raises(NotFound, match="no pod serves version 124"):
            client.predict(request, time.monotonic() + 30)
        assert predicts(old, "NOT_FOUND") == 1  # asked once; then its status said enough
        with pytest.raises(NotFound):
            client.predict(request, time.monotonic() + 30)
        assert predicts(old, "NOT_FOUND") == 1
    finally:
        client.close()


def test_targets_name_their_pods():
    assert resolve_target("ipv4:127.0.0.1:2,127.0.0.1:1") == ["127.0.0.1:1", "127.0.0.1:2"]
    assert resolve_target("ipv6:[::1]:8500") == ["[::1]:8500"]
    assert resolve_target("dns:///127.0.0.1:8500") == ["127.0.0.1:8500"]
    assert resolve_target("dns://8.8.8.8/127.0.0.1:9") == ["127.0.0.1:9"]
    assert resolve_target("tf-serving:8500") == ["tf-serving:8500"]  # one peer, gRPC resolves it
