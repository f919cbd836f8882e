"""The load test's wiring (components/locust-workers), read with
``loadtests.locust_scenarios.run``'s own parser: the workers reach their master, as many as it
expects, the master reaches the servers it names, and a worker that leaves has the time to hand
in its samples."""
from __future__ import annotations

import argparse
import contextlib
import io
from urllib.parse import urlsplit

from loadtests.locust_scenarios.run import parse_args
from loadtests.locust_scenarios.scenario import Scenario
from tests.deploy.manifests import (
    Obj,
    all_containers,
    container_port,
    named,
    of_kind,
    pod_labels,
    pod_spec,
    selects,
    where,
)

ENTRY_POINT = ["python", "-m", "loadtests.locust_scenarios.run"]
_HOST_FLAGS = ("host", "grpc_host", "tfserving_host")


def _parse(args: list[str]) -> argparse.Namespace | str:
    """The arguments as ``python -m loadtests.locust_scenarios.run`` reads them, or its error message."""
    message = io.StringIO()
    try:
        with contextlib.redirect_stderr(message):
            return parse_args(args)
    except SystemExit:
        return message.getvalue().strip().splitlines()[-1]


def _runs(objects: list[Obj]) -> tuple[list[tuple[Obj, Obj, argparse.Namespace]], list[str]]:
    """(workload, container, its parsed arguments) of every container running the load test,
    and the problems of those whose arguments do not parse."""
    runs, problems = [], []
    for workload, container in all_containers(objects):
        if container.get("command") == ENTRY_POINT:
            parsed = _parse(container.get("args", []))
            if isinstance(parsed, str):
                problems.append(f"{where(workload, container)}: {parsed}")
            else:
                runs.append((workload, container, parsed))
    return runs, problems


def _service_port(objects: list[Obj], host: str, port: int) -> tuple[Obj, Obj] | None:
    """The Service a ``HOST`` (its first DNS label) names, and its port ``port``."""
    service = named(objects, "Service", host.split(".")[0])
    found = service and next((p for p in service["spec"]["ports"] if p["port"] == port), None)
    return (service, found) if found else None


def _address(value: str) -> tuple[str, int]:
    """``http://HOST:PORT`` or ``HOST:PORT``."""
    parts = urlsplit(value if "://" in value else f"//{value}")
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def locust_wiring(objects: list[Obj]) -> list[str]:
    runs, problems = _runs(objects)
    masters = [(w, c, a) for w, c, a in runs if getattr(a, "expect_workers", None)]
    for workload, container, args in masters:
        label = where(workload, container)
        if container_port(container, args.master_port) is None:
            problems.append(f"{label}: --master-port={args.master_port} is not a port of the container")
        for flag in _HOST_FLAGS:
            value = getattr(args, flag, None)
            if value and _service_port(objects, *_address(value)) is None:
                problems.append(f"{label}: --{flag.replace('_', '-')}={value} is not a port of a Service here")
        joining = sum(w["spec"].get("replicas", 1) for w, _, a in runs
                      if a.command == "worker" and _leads_to(objects, a, workload, args.master_port))
        if joining != args.expect_workers:
            problems.append(f"{label}: expects {args.expect_workers} workers, but {joining} worker "
                            "pods are pointed at it")
    for workload, container, args in runs:
        if args.command != "worker":
            continue
        label = where(workload, container)
        if not any(_leads_to(objects, args, m, m_args.master_port) for m, _, m_args in masters):
            problems.append(f"{label}: --master-host={args.master_host} --master-port={args.master_port} "
                            "does not lead to a master's port")
        grace = pod_spec(workload).get("terminationGracePeriodSeconds", 30)
        if grace <= Scenario.timeout:
            problems.append(f"{label}: terminationGracePeriodSeconds {grace} <= the requests' timeout "
                            f"{Scenario.timeout:g} s: a leaving worker's samples would be lost")
        problems += [f"{label}: NetworkPolicy {p['metadata']['name']} keeps it out of the master's port"
                     for master, master_container, master_args in masters
                     for p in of_kind(objects, "NetworkPolicy")
                     if selects(p["spec"]["podSelector"], pod_labels(master))
                     and not _admits(p, workload, master_container, master_args.master_port)]
    return problems


def _leads_to(objects: list[Obj], worker: argparse.Namespace, master: Obj, master_port: int) -> bool:
    """The worker's --master-host and --master-port reach the master's pods on its port."""
    found = _service_port(objects, worker.master_host, worker.master_port)
    if found is None or not selects(found[0]["spec"]["selector"], pod_labels(master)):
        return False
    return any(container_port(c, found[1].get("targetPort", found[1]["port"])) == master_port
               for c in pod_spec(master)["containers"])


def _admits(policy: Obj, worker: Obj, master_container: Obj, port: int) -> bool:
    for rule in policy["spec"].get("ingress", []):
        peers = rule.get("from", [{}])  # no `from`: from anywhere
        ports = [container_port(master_container, q["port"]) for q in rule.get("ports", []) if "port" in q]
        if (not ports or port in ports) and any(
                "podSelector" not in peer or selects(peer["podSelector"], pod_labels(worker)) for peer in peers):
            return True
    return False


CHECKS = (locust_wiring,)
