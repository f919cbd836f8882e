"""The two workloads' command lines, read with the project's own parsers and checked against
the manifests around them: mounted files, ports, probes, Services, shutdown timing.

The gateway's arguments go through ``serving.cli.build_settings`` (exactly what the container
runs at start) against the ConfigMaps it mounts; TF Serving's through the same parser (which
knows every TF Serving flag) and its files through ``serving.tfs_config``, i.e.
tensorflow-serving-api's protos. A file that does not parse raises ``ConfigError``.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from serving import cli
from serving.settings import ModelConfig, Settings
from serving.tfs_config import (
    read_batching_parameters_file,
    read_model_config_file,
    read_monitoring_config_file,
)
from tests.deploy.manifests import (
    Obj,
    all_containers,
    container_port,
    named,
    of_kind,
    pod_labels,
    pod_spec,
    selected_workloads,
    selects,
    where,
)

GATEWAY_ENTRY_POINT = ("-m", "serving")  # after the interpreter, as in `make serve`
_GATEWAY_ONLY_FLAGS = {name for group, name, *_ in cli._FLAGS if group == "own"}
_UPSTREAM = re.compile(r"^(?:dns:///)?(?P<host>[^:/.]+)[^:/]*:(?P<port>\d+)$")  # host: a Service name


def is_gateway(container: Obj) -> bool:
    return tuple(container.get("command", ())[1:]) == GATEWAY_ENTRY_POINT


def is_tf_serving(container: Obj) -> bool:
    return container.get("command", [""])[0].endswith("tensorflow_model_server")


def flags(container: Obj) -> dict[str, str]:
    """``--name=value`` and bare ``--name`` (true) arguments by name."""
    pairs = (arg[2:].partition("=") for arg in container.get("args", []) if arg.startswith("--"))
    return {name: value if sep else "true" for name, sep, value in pairs}


_ENV_REF = re.compile(r"\$\((\w+)\)")


def expanded_args(container: Obj) -> list[str]:
    """The container's arguments with ``$(VAR)`` replaced as the kubelet replaces it: by the
    env var's ``value``, or a ``limits.cpu`` resourceFieldRef as whole cores (rounded up, as
    with ``divisor: 1``); a reference it cannot resolve stays as written."""
    values = {}
    for env in container.get("env", []):
        field = env.get("valueFrom", {}).get("resourceFieldRef", {})
        limit = container.get("resources", {}).get("limits", {}).get("cpu")
        if "value" in env:
            values[env["name"]] = env["value"]
        elif field.get("resource") == "limits.cpu" and str(field.get("divisor", "1")) == "1" and limit:
            millis = int(limit[:-1]) if str(limit).endswith("m") else int(float(limit) * 1000)
            values[env["name"]] = str(-(-millis // 1000))
    return [_ENV_REF.sub(lambda m: values.get(m[1], m[0]), arg) for arg in container.get("args", [])]


def mounted_files(objects: list[Obj], deployment: Obj, container: Obj) -> dict[str, str]:
    """Path -> content of every file the container sees from a rendered ConfigMap."""
    volumes = {v["name"]: v for v in pod_spec(deployment).get("volumes", [])}
    files = {}
    for mount in container.get("volumeMounts", []):
        source = volumes.get(mount["name"], {}).get("configMap")
        config_map = source and named(objects, "ConfigMap", source["name"])
        for key, text in (config_map or {}).get("data", {}).items():
            files[f"{mount['mountPath'].rstrip('/')}/{key}"] = text
    return files


class Workload:
    """One container's command line with the files it names written to a scratch folder."""

    def __init__(self, objects: list[Obj], deployment: Obj, container: Obj, scratch: Path) -> None:
        self.deployment, self.container = deployment, container
        self.where = where(deployment, container)
        self.flags = flags(container)
        self.files = mounted_files(objects, deployment, container)
        self.missing = [f"{self.where}: --{name}={path} is not a mounted file"
                        for name, path in self.flags.items()
                        if name.endswith("_file") and path and path not in self.files]
        self._scratch = scratch
        for path, text in self.files.items():
            local = self.local(path)
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(text)

    @property
    def grpc_port(self) -> int:
        return int(self.flags.get("port", 8500))

    def local(self, path: str) -> Path:
        return self._scratch / path.lstrip("/")

    def read(self, flag: str, reader: Any) -> Any:
        """Parse the file a flag names with ``reader``; None when the flag is absent."""
        path = self.flags.get(flag)
        return reader(self.local(path)) if path and path in self.files else None

    def settings(self) -> Settings:
        """The gateway's settings, built by its own CLI from these arguments and files."""
        args = [re.sub(r"^(--\w+_file=)(/.*)", lambda m: m[1] + str(self.local(m[2])), a)
                for a in expanded_args(self.container)]
        return cli.build_settings(args, environ={})


def workloads(objects: list[Obj], scratch: Path) -> list[Workload]:
    return [Workload(objects, d, c, scratch / f"{d['metadata']['name']}-{c['name']}")
            for d, c in all_containers(objects) if is_gateway(c) or is_tf_serving(c)]


def _with_workloads(check):
    """Run ``check(objects, gateways, servers)`` with both kinds of workload read from scratch."""
    def run(objects: list[Obj]) -> list[str]:
        with tempfile.TemporaryDirectory() as scratch:
            found = workloads(objects, Path(scratch))
            gateways = [w for w in found if is_gateway(w.container)]
            servers = [w for w in found if is_tf_serving(w.container)]
            return check(objects, gateways, servers)
    run.__name__ = check.__name__
    return run


# --- checks -------------------------------------------------------------------------------

@_with_workloads
def command_lines_valid(objects: list[Obj], gateways: list[Workload], servers: list[Workload]) -> list[str]:
    """Both parse, name only mounted files, and serve on exactly the ports they declare."""
    problems = [p for w in gateways + servers for p in w.missing]
    if not gateways or not servers:
        problems.append("the gateway and TF Serving must both be rendered")
    for w in gateways:
        if w.missing:
            continue
        settings = w.settings()
        problems += _ports(w, {settings.port, settings.rest_api_port} - {0})
    for w in servers:
        parsed = vars(cli.build_parser().parse_args(expanded_args(w.container)))
        problems += [f"{w.where}: --{name} is the gateway's flag, not TF Serving's"
                     for name in parsed if name in _GATEWAY_ONLY_FLAGS]
        w.read("model_config_file", read_model_config_file)
        w.read("monitoring_config_file", read_monitoring_config_file)
        w.read("batching_parameters_file", read_batching_parameters_file)
        problems += _ports(w, {w.grpc_port, int(w.flags.get("rest_api_port", 0))} - {0})
        problems += _exec_probe_arguments(w)
    return problems


def _ports(w: Workload, served: set[int]) -> list[str]:
    declared = {p["containerPort"] for p in w.container.get("ports", [])}
    return [f"{w.where}: its flags serve on {sorted(served)} but it declares ports {sorted(declared)}"
            ] if served != declared else []


def _exec_probe_arguments(w: Workload) -> list[str]:
    """An exec probe's file arguments are mounted and its port argument is the REST port."""
    problems = []
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        for arg in w.container.get(probe, {}).get("exec", {}).get("command", [])[1:]:
            if arg.startswith("/") and arg not in w.files:
                problems.append(f"{w.where}: {probe} reads {arg}, which is not a mounted file")
            if arg.isdigit() and arg != w.flags.get("rest_api_port"):
                problems.append(f"{w.where}: {probe} calls port {arg}, not --rest_api_port")
    return problems


@_with_workloads
def models_agree(objects: list[Obj], gateways: list[Workload], servers: list[Workload]) -> list[str]:
    """The gateway mirrors TF Serving's models and labels; every label names a served version."""
    problems, configs = [], {}
    for w in gateways + servers:
        models = w.read("model_config_file", read_model_config_file) or ()
        configs[w.where] = {m.name: (m.version_policy, m.version_labels) for m in models}
        problems += [f"{w.where}: model {m.name} labels {label!r} version {version}, "
                     f"which its policy does not serve"
                     for m in models for label, version in m.version_labels.items()
                     if not _serves(m, version)]
    if len({repr(sorted(c.items())) for c in configs.values()}) > 1:
        problems.append(f"the gateway and TF Serving configure different models: {configs}")
    return problems


def _serves(model: ModelConfig, version: int) -> bool:
    policy = model.version_policy
    return policy.kind != "specific" or version in policy.versions


@_with_workloads
def upstream_reaches_tf_serving(objects: list[Obj], gateways: list[Workload],
                                servers: list[Workload]) -> list[str]:
    """--upstream names a Service that leads to TF Serving's gRPC port, which only the gateway
    may reach."""
    problems = []
    for w in gateways:
        upstream = w.settings().upstream or ""
        match = _UPSTREAM.match(upstream)
        service = match and named(objects, "Service", match["host"])
        port = service and next((p for p in service["spec"]["ports"] if p["port"] == int(match["port"])), None)
        behind = [s for s in servers if port and selects(service["spec"]["selector"], pod_labels(s.deployment))]
        if not behind or any(container_port(s.container, port["targetPort"]) != s.grpc_port for s in behind):
            problems.append(f"{w.where}: --upstream={upstream} does not lead to TF Serving's gRPC port")
            continue
        if upstream.startswith("dns:///") and service["spec"].get("clusterIP") != "None":
            problems.append(f"{w.where}: --upstream={upstream} balances over the DNS records of "
                            f"Service {match['host']}, which is not headless (one record)")
        problems += [p for s in behind for p in _only_gateway_admitted(objects, w, s)]
    return problems


def _only_gateway_admitted(objects: list[Obj], gateway: Workload, server: Workload) -> list[str]:
    """NetworkPolicies admit the gateway's pods, and no others, to TF Serving's gRPC port."""
    policies = [p for p in of_kind(objects, "NetworkPolicy")
                if selects(p["spec"]["podSelector"], pod_labels(server.deployment))]
    if not policies:
        return [f"{server.where}: no NetworkPolicy selects it: every pod can reach it"]
    rules = [r for p in policies for r in p["spec"].get("ingress", [])
             if "ports" not in r or any("port" not in q or container_port(server.container, q["port"])
                                        == server.grpc_port for q in r["ports"])]
    peers = [peer for r in rules for peer in r.get("from", [{}])]  # no `from`: from anywhere
    if not any(selects(peer.get("podSelector"), pod_labels(gateway.deployment)) for peer in peers):
        return [f"{server.where}: NetworkPolicy keeps the gateway out of its gRPC port"]
    if any(list(peer) != ["podSelector"] or selected_workloads(objects, peer["podSelector"])
           != [gateway.deployment] for peer in peers):
        return [f"{server.where}: NetworkPolicy opens its gRPC port to pods other than the gateway's"]
    return []


@_with_workloads
def shutdown_fits_grace_period(objects: list[Obj], gateways: list[Workload],
                               servers: list[Workload]) -> list[str]:
    """terminationGracePeriodSeconds > preStop sleep + the gateway's drain."""
    problems = []
    for w in gateways + servers:
        grace = pod_spec(w.deployment).get("terminationGracePeriodSeconds", 30)
        pre_stop = w.container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        drain = w.settings().drain_timeout_seconds if w in gateways else 0
        if grace <= pre_stop + drain:
            problems.append(f"{w.where}: terminationGracePeriodSeconds {grace} <= preStop {pre_stop} s "
                            f"+ drain {drain:g} s: requests would be cut off")
    return problems


@_with_workloads
def batching_compatible(objects: list[Obj], gateways: list[Workload], servers: list[Workload]) -> list[str]:
    """If TF Serving batches too, its limits are explicit and it accepts the gateway's batches."""
    problems = []
    for server in servers:
        if server.flags.get("enable_batching", "false") == "false":
            continue
        params = server.read("batching_parameters_file", read_batching_parameters_file)
        if params is None:
            problems.append(f"{server.where}: batches with built-in limits: "
                            "give --batching_parameters_file")
            continue
        problems += [f"{server.where}: max_batch_size {params.max_batch_size} < the gateway's "
                     f"{g.settings().batching.max_batch_size}: TF Serving would refuse full batches"
                     for g in gateways if g.settings().batching.max_batch_size > params.max_batch_size]
    return problems


def metrics_path(objects: list[Obj], deployment: Obj, container: Obj) -> str | None:
    """Where the container serves Prometheus metrics (None: it does not)."""
    with tempfile.TemporaryDirectory() as scratch:
        w = Workload(objects, deployment, container, Path(scratch))
        if is_gateway(container):
            return w.settings().metrics_path
        return w.read("monitoring_config_file", read_monitoring_config_file)


CHECKS = (command_lines_valid, models_agree, upstream_reaches_tf_serving,
          shutdown_fits_grace_period, batching_compatible)
