"""Every overlay (and prod with the load-test component) renders, passes Kubernetes 1.30's
schemas strictly and every check; prod is complete, dev is small, the canary changes nothing
but the model config, and the load-test component adds its own objects and nothing else."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from serving.tfs_config import read_batching_parameters_file, read_model_config_file
from tests.deploy import policy
from tests.deploy.checks import problems
from tests.deploy.custom_resources import keda_hpas
from tests.deploy.manifests import (
    LOCUST,
    OVERLAYS,
    RENDERED,
    WITH_LOCUST,
    Obj,
    kustomize,
    named,
    of_kind,
    pod_spec,
    schema_errors,
)
from tests.deploy.workloads import Workload, is_gateway, is_tf_serving, workloads


@pytest.mark.parametrize("overlay", RENDERED)
def test_overlay_is_valid_for_kubernetes_1_30(rendered, overlay):
    objects = rendered[overlay]
    assert schema_errors(objects + keda_hpas(objects)) == []


@pytest.mark.parametrize("overlay", RENDERED)
def test_overlay_passes_every_check(rendered, overlay):
    assert problems(rendered[overlay]) == []


def _ids(objects: list[Obj]) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in objects}


def test_locust_component_applies_on_its_own_and_adds_only_its_objects(rendered):
    """``kubectl -n tf-gateway apply -k deploy/components/locust-workers`` next to an overlay:
    it renders alone, valid and within the policies; added to prod it changes nothing of prod."""
    alone = kustomize(LOCUST)
    assert schema_errors(alone) == []
    assert [p for check in policy.CHECKS for p in check(alone)] == []
    assert _ids(alone) == {("ServiceAccount", "loadtest"), ("Job", "locust-master"),
                           ("Service", "locust-master"), ("NetworkPolicy", "locust-master"),
                           ("Deployment", "locust-worker")}
    rest = [o for o in rendered[WITH_LOCUST] if (o["kind"], o["metadata"]["name"]) not in _ids(alone)]
    assert yaml.safe_dump_all(rest) == yaml.safe_dump_all(rendered["prod"])


def _workload(objects: list[Obj], tmp_path: Path, kind) -> Workload:
    (found,) = [w for w in workloads(objects, tmp_path) if kind(w.container)]
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_files_parse_with_tf_serving_protos(rendered, overlay, tmp_path):
    server = _workload(rendered[overlay], tmp_path / "s", is_tf_serving)
    gateway = _workload(rendered[overlay], tmp_path / "g", is_gateway)
    models = server.read("model_config_file", read_model_config_file)
    assert [m.name for m in models] == ["natality", "image_classifier"]
    assert all(m.version_labels["stable"] == 1 for m in models)
    assert "batching_parameters_file" not in server.flags  # the gateway is the one batcher
    assert gateway.read("batching_parameters_file", read_batching_parameters_file).max_batch_size == 128
    settings = gateway.settings()
    assert settings.enable_batching and settings.upstream == "dns:///tf-serving:8500"


def test_prod_has_every_production_piece(rendered):
    prod = rendered["prod"]
    assert Counter(o["kind"] for o in prod) >= Counter(
        PodDisruptionBudget=2, HorizontalPodAutoscaler=1, ScaledObject=1, ServiceMonitor=2,
        NetworkPolicy=1, Namespace=1)
    for deployment in of_kind(prod, "Deployment"):
        zones = {c["topologyKey"] for c in pod_spec(deployment)["topologySpreadConstraints"]}
        assert zones == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    account = named(prod, "ServiceAccount", "tf-serving")
    assert "iam.gke.io/gcp-service-account" in account["metadata"]["annotations"]
    assert {o["metadata"]["namespace"] for o in prod if o["kind"] != "Namespace"} == {"tf-gateway"}


def test_dev_is_one_small_pod_each(rendered):
    dev = rendered["dev"]
    assert not {"HorizontalPodAutoscaler", "ScaledObject", "PodDisruptionBudget"} & {o["kind"] for o in dev}
    for deployment in of_kind(dev, "Deployment"):
        assert deployment["spec"]["replicas"] == 1
        assert all(c["resources"]["requests"]["cpu"] == "250m" for c in pod_spec(deployment)["containers"])


def _without_models_config(objects: list[Obj]) -> str:
    (config,) = [o for o in of_kind(objects, "ConfigMap") if "models.config" in o["data"]]
    name = config["metadata"]["name"]  # carries the content's hash
    others = [o for o in objects if o is not config]
    return yaml.safe_dump_all(others).replace(name, "models-config")


def test_canary_serves_the_new_version_beside_the_stable_one(rendered, tmp_path):
    assert _without_models_config(rendered["prod"]) == _without_models_config(rendered["prod-canary"])
    stable = {m.name: m for m in _workload(rendered["prod"], tmp_path / "p", is_tf_serving)
              .read("model_config_file", read_model_config_file)}
    canary = {m.name: m for m in _workload(rendered["prod-canary"], tmp_path / "c", is_tf_serving)
              .read("model_config_file", read_model_config_file)}
    assert canary.keys() == stable.keys()
    assert all(canary[n].base_path == stable[n].base_path for n in stable)
    natality = canary["natality"]
    assert natality.version_policy.versions == (1, 2)
    assert natality.version_labels == {"stable": stable["natality"].version_labels["stable"], "canary": 2}
    assert canary["image_classifier"] == stable["image_classifier"]
