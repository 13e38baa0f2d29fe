"""The provider interface every cluster backend implements; ``registry`` lists the backends.

A provider brings clusters up, finds them again by name and tears them down; a cluster runs processes in
its pods, scales the echo Deployment, kills pods and flips readiness. Load and analysis code only ever
talk to these two protocols, so they never know which backend they run on.

State is discovered, not stored: ``get``/``list``/``down`` find clusters by name from what is running,
so ``down`` is safe to repeat and a crash never leaves something the tool cannot see.
This module imports no backend: backends import it, and ``balancebench.clusters.registry`` finds them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Protocol, Self, runtime_checkable

from balancebench.errors import InvalidInput
from balancebench.names import check_cluster_name

DATAPLANES: tuple[str, ...] = ("nftables", "iptables", "ipvs", "ebpf")
"""Service load-balancing dataplanes: kube-proxy's three modes and Cilium-style eBPF socket LB."""

KUBERNETES_DATAPLANES: tuple[str, ...] = ("iptables", "ipvs", "nftables", "cilium")
"""What real clusters (kind, existing) run: kube-proxy's modes and Cilium's kube-proxy replacement."""

IPVS_SCHEDULERS: tuple[str, ...] = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "sed", "nq", "mh")
"""kube-proxy's ``--ipvs-scheduler`` values; ``ipvs:SCHED`` names a dataplane with one of them."""


def is_dataplane(name: str) -> bool:
    """True if some provider knows ``name`` (each provider's ``check`` says whether it runs it)."""
    family, sep, scheduler = name.partition(":")
    if sep:
        return family == "ipvs" and scheduler in IPVS_SCHEDULERS
    return name in DATAPLANES or name in KUBERNETES_DATAPLANES


def dataplane_choices() -> str:
    """Every dataplane name, for error messages."""
    names = dict.fromkeys((*DATAPLANES, *KUBERNETES_DATAPLANES))
    return f"{', '.join(names)} or ipvs:SCHED (SCHED one of {', '.join(IPVS_SCHEDULERS)})"


NODE_KERNELS: tuple[str, ...] = ("auto", "host", "uml")
"""Whose kernel runs the nodes' networking: ``host`` (this machine's), ``uml`` (a User-Mode Linux kernel
per node, for what the host lacks, such as IPVS), or ``auto`` (uml exactly when the dataplane needs it)."""


PodRole = Literal["target", "source", "master", "proxy", "client"]
"""``proxy``: a pod that runs no echo and sends no load, for a service path's proxy (the ingress
controller, ``balancebench.paths.ingress``); the path starts its program there. ``client``: not a pod but a
machine next to the cluster, outside the pod network (netns: a namespace on the node network), that loads
a NodePort from outside as external clients do (``balancebench.paths.nodeport``); its node is
:data:`OUTSIDE`."""

OUTSIDE = "outside"
"""The ``node`` a ``client`` reports: it runs on no node of the cluster."""

EXTERNAL_TRAFFIC_POLICIES = ("Cluster", "Local")
"""A Service's ``externalTrafficPolicy`` values, spelled as Kubernetes spells them (Cluster the default)."""


@dataclass(frozen=True, kw_only=True)
class ClusterSpec:
    """What to bring up: topology, dataplane and the echo pods' options.

    ``echo_args`` are passed to every echo pod (server-side connection policies, latency …);
    ``pod_echo_args`` adds flags for single pods by name (``{"echo-0": ("--latency", "50ms")}``: a slow pod).
    """

    name: str
    nodes: int = 2
    targets: int = 6
    sources: int = 2
    dataplane: str = "nftables"
    service_port: int = 80
    target_port: int = 8080
    admin_port: int = 8081
    node_port: int = 30080
    echo_args: tuple[str, ...] = ()
    pod_echo_args: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    node_kernel: str = "auto"
    proxies: int = 0
    """Extra ``proxy-N`` pods on the pod network, started empty (a service path runs its proxy there)."""
    clients: int = 0
    """``client-N`` namespaces outside the pod network (on the node network), for load from outside."""

    def __post_init__(self) -> None:
        check_cluster_name(self.name)
        for what, value, least in (
            ("nodes", self.nodes, 1),
            ("targets", self.targets, 1),
            ("sources", self.sources, 1),
        ):
            if value < least:
                raise InvalidInput(f"--{what} must be at least {least}, got {value}")
        if not is_dataplane(self.dataplane):
            raise InvalidInput(f"unknown dataplane {self.dataplane!r}: choose {dataplane_choices()}")
        if self.node_kernel not in NODE_KERNELS:
            raise InvalidInput(
                f"unknown node kernel {self.node_kernel!r}: choose one of {', '.join(NODE_KERNELS)}"
            )
        if not 30000 <= self.node_port <= 32767:
            raise InvalidInput(f"node port {self.node_port} is outside 30000-32767, the NodePort range")


@dataclass(frozen=True, kw_only=True)
class ProviderOptions:
    """How to reach a real cluster and what to leave behind: ``--kubeconfig``, ``--context``, ``--keep``.

    The netns provider takes none; kind uses ``keep``; existing uses ``kubeconfig`` and ``context``."""

    kubeconfig: str | None = None
    context: str | None = None
    keep: bool = False

    def given(self) -> bool:
        return self != ProviderOptions()


@dataclass(frozen=True, kw_only=True)
class Pod:
    """A pod as ``status`` reports it."""

    name: str
    role: PodRole
    node: str
    ip: str
    ready: bool = True


@dataclass(frozen=True, kw_only=True)
class Service:
    """The echo Service: a ClusterIP and a NodePort in front of the ready target pods."""

    cluster_ip: str
    port: int
    node_port: int
    target_port: int
    external_traffic_policy: str = "Cluster"
    """``Local``: a node's NodePort sends traffic from outside the cluster to that node's own ready pods only
    (and drops it when it has none), keeping the client's address; ``Cluster``: to any pod, SNATed."""


@dataclass(frozen=True, kw_only=True)
class NodeKernel:
    """The kernel running the nodes' networking, as ``status`` reports it: ``{"name": "uml", …}``."""

    name: str
    release: str


@dataclass(frozen=True, kw_only=True)
class ClusterStatus:
    """What a cluster looks like right now; ``to_json`` is the ``cluster status --json`` contract."""

    name: str
    provider: str
    dataplane: str
    nodes: tuple[str, ...]
    service: Service
    pods: tuple[Pod, ...]
    kernel: NodeKernel | None = None
    load_master: Pod | None = None
    """A pod of its own for the Locust master (kind, existing: manifests/kubernetes/locust-master.yaml);
    None: the master runs in the first source pod. Not one of ``pods``: it sends no load."""

    def targets(self, *, ready_only: bool = True) -> list[Pod]:
        return [p for p in self.pods if p.role == "target" and (p.ready or not ready_only)]

    def sources(self) -> list[Pod]:
        return [p for p in self.pods if p.role == "source"]

    def proxies(self) -> list[Pod]:
        return [p for p in self.pods if p.role == "proxy"]

    def clients(self) -> list[Pod]:
        return [p for p in self.pods if p.role == "client"]

    def pod(self, name: str) -> Pod:
        for pod in self.pods:
            if pod.name == name:
                return pod
        known = ", ".join(p.name for p in self.pods)
        raise InvalidInput(f"no pod {name!r} in cluster {self.name!r}; pods are: {known}")

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "provider": self.provider,
            "dataplane": self.dataplane,
            "nodes": list(self.nodes),
            "service": {
                "cluster_ip": self.service.cluster_ip,
                "port": self.service.port,
                "node_port": self.service.node_port,
                "target_port": self.service.target_port,
                "external_traffic_policy": self.service.external_traffic_policy,
            },
            "pods": [
                {"name": p.name, "role": p.role, "node": p.node, "ip": p.ip, "ready": p.ready}
                for p in self.pods
            ],
            "kernel": (
                {"name": self.kernel.name, "release": self.kernel.release}
                if self.kernel is not None
                else None
            ),
        }


@runtime_checkable
class Cluster(Protocol):
    """A running cluster. A context manager: leaving the ``with`` block brings it down."""

    name: str

    def status(self) -> ClusterStatus:
        """Nodes, pods (with node, IP, readiness), the Service address and the dataplane."""
        ...

    def exec(
        self,
        pod: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``pod``'s network, with the downward-API variables
        ``POD_NAME``, ``POD_IP`` and ``NODE_NAME`` set (plus ``env``). The caller owns the process:
        terminating or killing it ends the program (with SIGTERM), and so does the cluster going down.

        ``stdin``/``stdout``/``stderr`` are as for ``subprocess.Popen``: ``None`` passes the caller's
        own straight through (``cluster exec``), ``subprocess.PIPE`` gives pipes; the exit code is the
        program's."""
        ...

    def scale(self, targets: int) -> ClusterStatus:
        """Set the number of echo pods; new pods get new connections only, as with kube-proxy."""
        ...

    def kill(self, pod: str) -> None:
        """Remove a pod's endpoint, read its counters (see ``departed``) and kill its processes; its
        established connections break."""
        ...

    def set_ready(self, pod: str, ready: bool) -> None:
        """Flip a target pod's readiness; an unready pod leaves the endpoints but keeps running."""
        ...

    def replace(self, pod: str, *, max_surge: int = 0, drain_timeout: float = 5.0) -> str:
        """One step of a rolling restart, as a Deployment rollout does it: the pod leaves the endpoints,
        drains (at most ``drain_timeout`` s) and is deleted; a new pod with a new name and IP replaces it
        (``max_surge=1``: the new one is ready first). Returns the new pod's name."""
        ...

    def departed(self) -> dict[str, int]:
        """Request totals (``echo_requests_total``) of the echo pods that left the cluster — killed,
        scaled down or replaced — read just before each died, so records still reconcile exactly."""
        ...

    def pod_http(
        self, pod: str, path: str, *, method: str = "GET", body: bytes | None = None, port: int | None = None
    ) -> tuple[int, bytes]:
        """One HTTP request to a pod from inside the cluster (default: the echo admin port),
        e.g. ``/metrics`` or ``/admin/faults``; returns (status, body)."""
        ...

    def down(self) -> None:
        """Remove everything the cluster made. Safe to repeat."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Provider(Protocol):
    """A cluster backend: brings clusters up, finds them by name, lists and deletes them."""

    name: str

    def unavailable(self) -> str | None:
        """None if this provider can run on this machine, else why not and how to get it, in one line
        (``"kind not found: install kind, or use --provider netns"``). Cheap: ``detect()`` asks every one."""
        ...

    def check(self, spec: ClusterSpec) -> None:
        """Raise InvalidInput (or MissingFeature) if ``spec`` cannot be brought up on this machine."""
        ...

    def up(self, spec: ClusterSpec, *, detach: bool = False) -> Cluster:
        """Create the cluster and wait until every echo pod answers; roll back on any failure.

        ``detach=False``: the cluster dies with the calling process (a run). ``detach=True``: it
        outlives the caller (``cluster up``) and is found again by ``get(name)``."""
        ...

    def get(self, name: str) -> Cluster:
        """The running cluster called ``name``; InvalidInput if there is none."""
        ...

    def list(self) -> list[str]:
        """Names of the running clusters of this provider."""
        ...

    def delete(self, name: str) -> bool:
        """Bring ``name`` down if it runs; True if there was something to remove. Idempotent."""
        ...

    def leftovers(self) -> tuple[str, ...]:
        """Names of clusters of ours that no longer run but left something (a log, a socket, a cgroup):
        ``delete`` removes it; ``cluster down --all`` sweeps them with the running ones."""
        ...
