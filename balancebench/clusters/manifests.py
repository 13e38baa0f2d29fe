"""The files in ``manifests/`` rendered for one cluster: kind configs, Kubernetes objects, Cilium values.

The YAML files are complete and valid as they are (tests validate them unchanged); rendering only sets
what differs per cluster — names, the namespace, replicas, the worker count, the IPVS scheduler, the echo
flags — on the parsed objects, never by text substitution.

    >>> config = kind_config("dev", "ipvs:lc", workers=2)
    >>> config["networking"]["kubeProxyMode"]
    'ipvs'
    >>> [obj["kind"] for obj in workload_objects(ClusterSpec(name="dev"), namespace="balancebench-dev")]
    ['Namespace', 'Deployment', 'Service', 'Deployment', 'Service', 'StatefulSet']
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from balancebench.clusters.base import IPVS_SCHEDULERS, ClusterSpec
from balancebench.errors import InvalidInput

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
"""The repository's ``manifests/`` folder (kind configs, Kubernetes YAML, Helm values)."""

KUBERNETES = MANIFESTS / "kubernetes"
KIND = MANIFESTS / "kind"
CILIUM = MANIFESTS / "cilium"

WORKLOAD_FILES = (
    "namespace.yaml",
    "echo-deployment.yaml",
    "echo-service.yaml",
    "locust-master.yaml",
    "locust-workers.yaml",
)
"""Applied in this order: the namespace first, the Service before the pods that are its clients."""

ECHO_IMAGE = "balancebench-echo:dev"
"""Built from workloads/echo/Dockerfile and loaded into kind (``kind load docker-image``)."""

LOCUST_IMAGE = "balancebench-locust:dev"
"""Built from loadtests/Dockerfile: Locust, the locustfile and the record schema."""

PART_OF = "app.kubernetes.io/part-of=balancebench"
"""The label selector of everything balancebench creates (and of nothing else)."""

CLUSTER_LABEL = "balancebench.io/cluster"
ROLE_LABEL = "balancebench.io/role"

Object = dict[str, Any]


def load_yaml(path: Path) -> list[Object]:
    """Every document in a YAML file, as plain dicts."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def namespace_for(cluster: str) -> str:
    """The one namespace a cluster's objects live in."""
    return f"balancebench-{cluster}"


def kind_cluster_name(cluster: str) -> str:
    """kind clusters balancebench creates are named ``balancebench-<cluster>``: found by that prefix."""
    return f"balancebench-{cluster}"


@dataclass(frozen=True, kw_only=True)
class KindDataplane:
    """A kind dataplane: its config file, kube-proxy mode and, for ``ipvs:SCHED``, the IPVS scheduler."""

    name: str
    config: str
    kube_proxy_mode: str
    scheduler: str | None = None

    @property
    def cilium(self) -> bool:
        return self.config == "cilium"


KIND_DATAPLANES: tuple[str, ...] = ("iptables", "ipvs", "nftables", "cilium")
"""What ``--provider kind`` measures; ``ipvs:SCHED`` (e.g. ``ipvs:lc``) picks an IPVS scheduler."""


def kind_dataplane(name: str) -> KindDataplane:
    """Parse ``iptables``, ``ipvs``, ``ipvs:SCHED``, ``nftables`` or ``cilium``; InvalidInput otherwise."""
    family, _, scheduler = name.partition(":")
    if family not in KIND_DATAPLANES or (scheduler and family != "ipvs"):
        raise InvalidInput(
            f"dataplane {name!r} does not run on kind: choose {', '.join(KIND_DATAPLANES)} or ipvs:SCHED "
            f"(SCHED one of {', '.join(IPVS_SCHEDULERS)})"
        )
    if scheduler and scheduler not in IPVS_SCHEDULERS:
        raise InvalidInput(
            f"unknown IPVS scheduler {scheduler!r} in {name!r}: choose one of {', '.join(IPVS_SCHEDULERS)}"
        )
    if family == "cilium":
        return KindDataplane(name=name, config="cilium", kube_proxy_mode="none")
    return KindDataplane(name=name, config=family, kube_proxy_mode=family, scheduler=scheduler or None)


def kind_config(cluster: str, dataplane: str, *, workers: int) -> Object:
    """manifests/kind/<mode>.yaml for ``cluster``: its name, one control plane and ``workers`` workers,
    and for ``ipvs:SCHED`` the KubeProxyConfiguration patch's ``ipvs.scheduler`` set to SCHED."""
    if workers < 1:
        raise InvalidInput(f"a kind cluster needs at least one worker node, got {workers}")
    plane = kind_dataplane(dataplane)
    [config] = load_yaml(KIND / f"{plane.config}.yaml")
    config["name"] = kind_cluster_name(cluster)
    config["nodes"] = [{"role": "control-plane"}] + [{"role": "worker"} for _ in range(workers)]
    if plane.config == "ipvs":
        patches = []
        for text in config.get("kubeadmConfigPatches", []):
            patch = yaml.safe_load(text)
            if patch.get("kind") == "KubeProxyConfiguration":
                patch.setdefault("ipvs", {})["scheduler"] = plane.scheduler or patch["ipvs"].get("scheduler")
                text = yaml.safe_dump(patch, sort_keys=False)
            patches.append(text)
        config["kubeadmConfigPatches"] = patches
    return config


def kube_proxy_patch(config: Object) -> Object | None:
    """The KubeProxyConfiguration patch of a rendered kind config, if it has one."""
    for text in config.get("kubeadmConfigPatches", []):
        patch = yaml.safe_load(text)
        if isinstance(patch, dict) and patch.get("kind") == "KubeProxyConfiguration":
            return patch
    return None


def cilium_chart() -> Object:
    """The pinned chart: name, repository, version, release, namespace (manifests/cilium/chart.yaml)."""
    [chart] = load_yaml(CILIUM / "chart.yaml")
    return chart


def cilium_values(cluster: str) -> Object:
    """manifests/cilium/values.yaml with the API server kind gives ``cluster`` (its control-plane node)."""
    [values] = load_yaml(CILIUM / "values.yaml")
    values["k8sServiceHost"] = f"{kind_cluster_name(cluster)}-control-plane"
    return values


def workload_objects(spec: ClusterSpec, *, namespace: str) -> list[Object]:
    """The namespace, echo Deployment and Service, Locust master and workers for ``spec``, in apply order."""
    objects: list[Object] = []
    for file in WORKLOAD_FILES:
        objects += load_yaml(KUBERNETES / file)
    for obj in objects:
        metadata = obj["metadata"]
        metadata.setdefault("labels", {})[CLUSTER_LABEL] = spec.name
        if obj["kind"] == "Namespace":
            metadata["name"] = namespace
        else:
            metadata["namespace"] = namespace
        name = (obj["kind"], metadata["name"])
        if name == ("Deployment", "echo"):
            _render_echo(obj, spec)
        elif name == ("Service", "echo"):
            [port] = obj["spec"]["ports"]
            port.update(port=spec.service_port, nodePort=spec.node_port)
        elif name == ("StatefulSet", "locust-worker"):
            obj["spec"]["replicas"] = spec.sources
    return objects


def _render_echo(deployment: Object, spec: ClusterSpec) -> None:
    deployment["spec"]["replicas"] = spec.targets
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    container["args"] = [
        "--port",
        str(spec.target_port),
        "--admin-port",
        str(spec.admin_port),
        *spec.echo_args,
    ]
    for port in container["ports"]:
        port["containerPort"] = spec.target_port if port["name"] == "http" else spec.admin_port


def pod_templates(objects: list[Object]) -> Iterator[tuple[str, Object]]:
    """``(workload name, pod spec)`` of every Deployment and StatefulSet in ``objects``."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def to_yaml(objects: list[Object]) -> str:
    """Objects as one multi-document YAML text (what ``kubectl apply -f`` would take)."""
    return "---\n".join(yaml.safe_dump(copy.deepcopy(obj), sort_keys=False) for obj in objects)


def load_schema(path: Path) -> Object:
    schema: Object = json.loads(path.read_text())
    return schema
