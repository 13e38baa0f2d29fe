"""Service dataplanes of the netns cluster: one module each, behind one small interface.

A dataplane turns the list of ready endpoints into the kernel state that balances connections to the
Service: kube-proxy's ``iptables``, ``nftables`` and ``ipvs`` modes in every node, or Cilium-style socket
load balancing (``ebpf``) at ``connect()``. The supervisor calls ``setup()`` once, then ``sync(endpoints)``
whenever readiness changes (or, after ``set_service``, the Service's externalTrafficPolicy), and
``tick()`` every second (IPVS deletes drained real servers then); it never knows which one it drives.
Every command a dataplane runs in a node goes through the node's :class:`NodeShell` (``nsenter`` into a
host namespace, or a UML node's agent), so the same code programs host-kernel and User-Mode
Linux nodes; ``NODE_KERNELS`` in each module says which kernels it runs on.

>>> check("ipvs", "host")  # on this kernel
MissingFeature: dataplane ipvs needs the kernel's IPVS (CONFIG_IP_VS), which this kernel lacks: …
>>> dataplane = create("nftables", context); dataplane.setup(); dataplane.sync(endpoints)
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

from balancebench.clusters.base import DATAPLANES, Service, dataplane_choices, is_dataplane
from balancebench.errors import InvalidInput, MissingFeature
from balancebench.shell import run


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """A ready target pod as an EndpointSlice lists it."""

    pod: str
    ip: str
    port: int
    node: str = ""
    """The node the pod runs on (the EndpointSlice's ``nodeName``): what externalTrafficPolicy Local keeps."""


def node_local(endpoints: Sequence[Endpoint], node: str) -> list[Endpoint]:
    """The endpoints on ``node``: where its NodePort sends outside traffic under externalTrafficPolicy
    Local."""
    return [ep for ep in endpoints if ep.node == node]


class NodeShell(Protocol):
    """Runs commands in one node's network stack; raises CommandError (via :func:`run`) on failure."""

    @property
    def kernel(self) -> str:
        """``host`` or ``uml``: what the node's networking runs on."""
        ...

    @property
    def iptables_restore(self) -> tuple[str, ...]:
        """The ``iptables-restore --noflush`` command this node's kernel supports (nft or legacy backend)."""
        ...

    def run(self, argv: Sequence[str], *, input: str | None = None) -> subprocess.CompletedProcess[str]: ...


@dataclass(frozen=True, kw_only=True)
class NetnsShell:
    """A host-kernel node: commands run in its network namespace through ``nsenter``."""

    netns: str
    kernel: str = "host"
    iptables_restore: tuple[str, ...] = ("iptables-restore", "--noflush", "-w", "5")

    def run(self, argv: Sequence[str], *, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run(in_netns(self.netns, argv), input=input)


@dataclass(frozen=True, kw_only=True)
class Node:
    """A node as a dataplane programs it: its address on the node network and how to run commands in it."""

    name: str
    ip: str
    shell: NodeShell


@dataclass(frozen=True, kw_only=True)
class DataplaneContext:
    """What a dataplane needs to know about the cluster; addresses are the sandbox's own."""

    nodes: tuple[Node, ...]
    service: Service
    pod_cidr: str
    service_cidr: str
    cgroup: str | None = None
    """The cluster's cgroup (every pod's cgroup is below it); set when the dataplane asked for cgroups."""
    state_dir: str = "/run/balancebench"
    """A directory on the sandbox's private tmpfs for the dataplane's own files (bpffs mounts, …)."""


class Dataplane(Protocol):
    """Programs the Service into the kernel; created inside the sandbox by the supervisor."""

    def setup(self) -> None:
        """One-time programming (tables, chains, programs) before the first sync."""
        ...

    def sync(self, endpoints: Sequence[Endpoint]) -> None:
        """Make new connections to the Service go to ``endpoints`` only; keep established ones as they are."""
        ...

    def tick(self) -> None:
        """Periodic housekeeping between syncs (IPVS: delete terminating real servers once drained)."""
        ...

    def set_service(self, service: Service) -> None:
        """The Service changed (its externalTrafficPolicy): the next ``sync`` programs it so."""
        ...


DEFAULT_IPVS_SCHEDULER = "rr"
"""What plain ``ipvs`` means: kube-proxy's default ``--ipvs-scheduler``."""


def split_dataplane(name: str) -> tuple[str, str | None]:
    """``("ipvs", "lc")`` for ``ipvs:lc``, ``("ipvs", "rr")`` for ``ipvs``, ``(name, None)`` otherwise."""
    base, _, option = name.partition(":")
    if base == "ipvs":
        return base, option or DEFAULT_IPVS_SCHEDULER
    return base, None


def _module(name: str) -> ModuleType:
    if not is_dataplane(name) or split_dataplane(name)[0] not in DATAPLANES:
        raise InvalidInput(f"unknown dataplane {name!r}: choose {dataplane_choices()}")
    return importlib.import_module(f"{__name__}.{split_dataplane(name)[0]}")


def check(name: str, kernel: str = "host") -> None:
    """Raise MissingFeature (one line, with the way out) if dataplane ``name`` cannot run on ``kernel`` nodes.

    ``kernel`` is ``host`` (this machine's kernel) or ``uml``; whether UML itself can start is the node
    kernel's own check."""
    module = _module(name)
    base = split_dataplane(name)[0]
    kernels: tuple[str, ...] = getattr(module, "NODE_KERNELS", ("host",))
    if kernel not in kernels:
        others = [k for k in kernels if k != kernel]
        raise MissingFeature(
            f"dataplane {base} does not run on {kernel} node kernels ({module.KERNEL_NOTE}): "
            f"use --node-kernel {' or '.join(others)}"
            if others
            else f"dataplane {base} does not run on {kernel} node kernels"
        )
    module.check(kernel)


def runs_on(name: str, kernel: str) -> bool:
    """True if dataplane ``name`` can run on ``kernel`` nodes at all (whatever this machine has)."""
    return kernel in getattr(_module(name), "NODE_KERNELS", ("host",))


def kernel_modules(name: str) -> tuple[str, ...]:
    """The kernel modules the dataplane needs loaded in a node kernel that loads them on request (UML)."""
    modules: tuple[str, ...] = getattr(_module(name), "MODULES", ())
    scheduler = split_dataplane(name)[1]
    return (*modules, f"ip_vs_{scheduler}") if split_dataplane(name)[0] == "ipvs" else modules


def needs_cgroups(name: str) -> bool:
    """True if the dataplane hooks pods by cgroup (so every pod process must live in its pod's cgroup)."""
    return bool(getattr(_module(name), "NEEDS_CGROUPS", False))


def check_endpoints(name: str, endpoints: int) -> None:
    """InvalidInput (one line) if a Service of ``endpoints`` endpoints exceeds what dataplane ``name`` holds
    (a module's ``MAX_ENDPOINTS``, such as ebpf's backend map; the others hold any number)."""
    limit: int | None = getattr(_module(name), "MAX_ENDPOINTS", None)
    if limit is not None and endpoints > limit:
        raise InvalidInput(
            f"dataplane {split_dataplane(name)[0]} holds at most {limit:,} endpoints per Service, "
            f"{endpoints:,} echo pods asked: use fewer targets or another dataplane"
        )


def create(name: str, context: DataplaneContext) -> Dataplane:
    """The dataplane ``name`` (``ipvs:lc`` passes its scheduler) for the cluster ``context`` describes."""
    dataplane: Dataplane = _module(name).create(context, split_dataplane(name)[1])
    return dataplane


def require_tools(dataplane: str, *tools: str) -> None:
    """MissingFeature naming the first of ``tools`` not on PATH."""
    for tool in tools:
        if shutil.which(tool) is None:
            raise MissingFeature(
                f"dataplane {dataplane} needs {tool!r}, which is not installed: run scripts/setup.sh "
                "(or install it with apt-get), or choose another --dataplane"
            )


def on_every_node(nodes: Sequence[Node], program: Callable[[Node], object]) -> None:
    """Run ``program`` for every node at once (UML nodes answer slowly, each on its own CPU time)."""
    if len(nodes) <= 1:
        for node in nodes:
            program(node)
        return
    with ThreadPoolExecutor(max_workers=min(len(nodes), 8)) as pool:
        for future in [pool.submit(program, node) for node in nodes]:
            future.result()


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside the network namespace mounted at ``netns`` (a command you can paste)."""
    return ["nsenter", f"--net={netns}", "--", *argv]
