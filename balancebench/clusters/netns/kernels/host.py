"""Host-kernel nodes: each node is a network namespace of this machine's kernel (the netns default).

The wiring is :mod:`network`'s: nodes on the sandbox's node bridge, kindnet-style point-to-point veths
to their pods, routes between the nodes' pod CIDRs; commands run in a node through ``nsenter``.
"""

from __future__ import annotations

import contextlib
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from balancebench.clusters.base import NodeKernel
from balancebench.clusters.netns import addressing, network
from balancebench.clusters.netns.dataplanes import NetnsShell, Node, in_netns
from balancebench.clusters.netns.network import PodLink
from balancebench.errors import ClusterError
from balancebench.shell import run


def check() -> None:
    """Host nodes need nothing beyond what the netns provider checks."""


class HostNodes:
    """The cluster's nodes as namespaces of the host kernel."""

    kernel = "host"

    def __init__(self, *, nodes: int) -> None:
        self.count = nodes
        self.names = tuple(addressing.node_name(i) for i in range(nodes))

    def build(self, pods: Sequence[PodLink]) -> None:
        run(["ip", "-batch", "-"], input=network.sandbox_script(nodes=self.count, pods=pods))
        for index, name in enumerate(self.names):
            on_node = [p for p in pods if p.node == index]
            script = network.node_script(index=index, nodes=self.count, pods=on_node)
            run(["ip", "-n", name, "-batch", "-"], input=script)
            run(in_netns(network.netns_path(name), ["sysctl", "-qw", "net.ipv4.ip_forward=1"]))
        run(["ip", "-batch", "-"], input=network.sandbox_routes_script(self.count))

    async def wait_ready(self, deadline: float) -> None:
        """Namespaces are ready as soon as they exist."""

    def add_pods(self, pods: Sequence[PodLink]) -> None:
        for index in sorted({p.node for p in pods}):
            script = network.node_script(
                index=None, nodes=self.count, pods=[p for p in pods if p.node == index]
            )
            run(["ip", "-n", self.names[index], "-batch", "-"], input=script)

    def remove_pod(self, pod: PodLink) -> None:
        with contextlib.suppress(ClusterError):
            run(["ip", "-n", self.names[pod.node], "link", "del", pod.veth])

    def dataplane_nodes(self) -> tuple[Node, ...]:
        return tuple(
            Node(name=name, ip=addressing.node_ip(i), shell=NetnsShell(netns=network.netns_path(name)))
            for i, name in enumerate(self.names)
        )

    def info(self) -> NodeKernel:
        return NodeKernel(name="host", release=platform.release())

    def exec_info(self, node: str) -> dict[str, Any]:
        return {"netns": network.netns_path(node), "env": {"NODE_NAME": node}}

    def processes(self) -> list[subprocess.Popen[bytes]]:
        return []

    def before_teardown(self) -> None:
        # With the links about to vanish, FINs of dead processes would otherwise be retransmitted for
        # minutes, keeping the node namespaces alive in the kernel.
        for name in self.names:
            with contextlib.suppress(ClusterError):
                run(in_netns(network.netns_path(name), ["ss", "-K", "-t", "-a"]), check=False)


def create(*, nodes: int, dataplane: str, cluster: str, log_dir: Path) -> HostNodes:
    return HostNodes(nodes=nodes)
