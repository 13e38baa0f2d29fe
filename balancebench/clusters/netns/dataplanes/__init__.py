"""Service dataplanes of the netns cluster: one module each, behind one small interface.

A dataplane turns the list of ready endpoints into the kernel state that balances connections to the
Service: kube-proxy's ``iptables``, ``nftables`` and ``ipvs`` modes in every node, or Cilium-style socket
load balancing (``ebpf``) at ``connect()``. The supervisor calls ``setup()`` once, then ``sync(endpoints)``
whenever readiness changes, and never knows which one it drives.

>>> check("ipvs")  # on this kernel
MissingFeature: dataplane ipvs needs the kernel's IPVS (CONFIG_IP_VS), which this kernel lacks: …
>>> dataplane = create("nftables", context); dataplane.setup(); dataplane.sync(endpoints)
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

from balancebench.clusters.base import DATAPLANES, Service
from balancebench.errors import InvalidInput, MissingFeature


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """A ready target pod as an EndpointSlice lists it."""

    pod: str
    ip: str
    port: int


@dataclass(frozen=True, kw_only=True)
class Node:
    """A node as a dataplane programs it: its network namespace and its address on the node network."""

    name: str
    netns: str
    ip: str


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


def _module(name: str) -> ModuleType:
    if name not in DATAPLANES:
        raise InvalidInput(f"unknown dataplane {name!r}: choose one of {', '.join(DATAPLANES)}")
    return importlib.import_module(f"{__name__}.{name}")


def check(name: str) -> None:
    """Raise MissingFeature (one line, with the way out) if this machine cannot run dataplane ``name``."""
    _module(name).check()


def needs_cgroups(name: str) -> bool:
    """True if the dataplane hooks pods by cgroup (so every pod process must live in its pod's cgroup)."""
    return bool(getattr(_module(name), "NEEDS_CGROUPS", False))


def create(name: str, context: DataplaneContext) -> Dataplane:
    dataplane: Dataplane = _module(name).create(context)
    return dataplane


def require_tools(dataplane: str, *tools: str) -> None:
    """MissingFeature naming the first of ``tools`` not on PATH."""
    for tool in tools:
        if shutil.which(tool) is None:
            raise MissingFeature(
                f"dataplane {dataplane} needs {tool!r}, which is not installed: run scripts/setup.sh "
                "(or install it with apt-get), or choose another --dataplane"
            )


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside the network namespace mounted at ``netns`` (a command you can paste)."""
    return ["nsenter", f"--net={netns}", "--", *argv]
