"""Node kernels of the netns cluster: whose kernel runs each node's networking, one module each.

``host`` nodes are network namespaces of this machine's kernel. ``uml`` nodes are one User-Mode Linux
kernel process each, inside the cluster's sandbox, for dataplanes that need what the host kernel lacks
(IPVS on the machines this project is built on); pods stay host namespaces either way, wired so that all
their traffic passes through their node's kernel. ``auto`` picks ``uml`` exactly when the dataplane cannot
run on the host kernel but can on UML. The supervisor drives either through :class:`Nodes`.

>>> resolve("auto", "ipvs")  # on a kernel without IPVS
'uml'
>>> nodes = create("uml", nodes=2, dataplane="ipvs", cluster="dev", log_dir=Path("/run/balancebench/logs"))
"""

from __future__ import annotations

import importlib
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from balancebench.clusters.base import NodeKernel
from balancebench.clusters.netns import dataplanes
from balancebench.clusters.netns.dataplanes import Node
from balancebench.clusters.netns.network import PodLink
from balancebench.errors import InvalidInput, MissingFeature

NODE_KERNELS: tuple[str, ...] = ("host", "uml")
"""The node kernels there are, each a module of this package; ``auto`` chooses between them."""


class Nodes(Protocol):
    """A cluster's nodes on one kind of kernel: built, wired to their pods, reached for commands."""

    kernel: str

    def build(self, pods: Sequence[PodLink]) -> None:
        """Create the nodes, the pods' namespaces and the node side of every pod's link (start-up)."""
        ...

    async def wait_ready(self, deadline: float) -> None:
        """Return once every node accepts commands (``time.monotonic()`` deadline); ClusterError if not."""
        ...

    def add_pods(self, pods: Sequence[PodLink]) -> None:
        """Create the namespaces and node-side links of pods added to a running cluster."""
        ...

    def remove_pod(self, pod: PodLink) -> None:
        """Delete the node side of a pod's link (its namespace is the supervisor's to delete)."""
        ...

    def dataplane_nodes(self) -> tuple[Node, ...]:
        """The nodes as a dataplane programs them, each with its shell."""
        ...

    def info(self) -> NodeKernel:
        """The kernel's name and release, as ``status`` reports it."""
        ...

    def exec_info(self, node: str) -> dict[str, Any]:
        """Where ``cluster exec NODE`` goes: ``{"netns": path}`` or ``{"agent": "IP:PORT"}``, plus ``env``."""
        ...

    def processes(self) -> list[subprocess.Popen[bytes]]:
        """The node kernels' own processes (the supervisor, as PID 1, reaps them)."""
        ...

    def before_teardown(self) -> None:
        """Abort what the nodes hold before everything is killed (host: connections in node namespaces)."""
        ...


def _known(kernel: str) -> str:
    if kernel not in NODE_KERNELS:
        raise InvalidInput(f"unknown node kernel {kernel!r}: choose one of auto, {', '.join(NODE_KERNELS)}")
    return kernel


def _module(kernel: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{_known(kernel)}")


def check(kernel: str) -> None:
    """MissingFeature (one line, with the way out) if ``kernel`` nodes cannot start on this machine."""
    _module(kernel).check()


def resolve(choice: str, dataplane: str) -> str:
    """The node kernel a cluster of ``dataplane`` runs on: ``choice``, or for ``auto`` the one that works.

    Raises MissingFeature (one line) if the dataplane cannot run on the chosen kernel, or, for ``auto``, on
    any kernel this machine can offer."""
    if choice != "auto":
        dataplanes.check(dataplane, _known(choice))
        check(choice)
        return choice
    try:
        dataplanes.check(dataplane, "host")
        return "host"
    except MissingFeature as on_host:
        if not dataplanes.runs_on(dataplane, "uml"):
            raise
        try:
            check("uml")
            dataplanes.check(dataplane, "uml")
        except MissingFeature as on_uml:
            raise MissingFeature(f"{on_host}; UML nodes cannot start either: {on_uml}") from on_uml
        return "uml"


def create(kernel: str, *, nodes: int, dataplane: str, cluster: str, log_dir: Path) -> Nodes:
    """The nodes of a cluster on ``kernel`` (already resolved), inside the sandbox."""
    created: Nodes = _module(kernel).create(
        nodes=nodes, dataplane=dataplane, cluster=cluster, log_dir=log_dir
    )
    return created
