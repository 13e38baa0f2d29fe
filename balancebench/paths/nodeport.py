"""The ``nodeport`` path: clients outside the cluster dial a node's address at the Service's NodePort, and
that node's dataplane picks a pod for each new connection.

``nodeport`` enters node-0; ``nodeport:node-1`` another node; ``:Local`` after it (``nodeport:node-1:Local``,
or ``nodeport:Local`` for node-0) sets the Service's ``externalTrafficPolicy: Local`` for the cell.

* ``Cluster`` (the default): any pod on any node, SNATed to the node.
* ``Local``: only the entered node's own ready pods, the client's address kept; a node without one drops
  the traffic (kube-proxy's "has no local endpoints" rule; IPVS finds no real server and refuses), so
  every request through it fails, as on a real cluster.

The clients are the cluster's ``client`` namespaces on the node network, outside the pod network, one per
source pod: kube-proxy sends NodePort traffic that comes *from a pod* to any endpoint even under Local
("short-circuit pod traffic"), so only clients from outside see what Local does. Cilium-style socket load
balancing (``ebpf``) balances NodePorts only at ``connect()`` in the cluster's pods, so this path refuses it.
The web UI still loads ``nodeport`` from its workers in the source pods (it offers no ``:Local``, and under
Cluster the entered node balances pod traffic the same way).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from balancebench.clusters.base import Cluster, ClusterStatus
from balancebench.clusters.netns import addressing
from balancebench.errors import RunError
from balancebench.paths.base import Entry, policy_of, set_traffic_policy

ENTRY_NODES = 8
"""Nodes a cell may enter by name (``nodeport:node-0`` … ``node-7``); a scenario has at most 16 nodes."""


def refuses_ebpf(path: str, dataplane: str) -> str | None:
    """Why ``path`` (entered from outside the cluster) makes no sense on ``dataplane``, or None."""
    if dataplane.partition(":")[0] != "ebpf":
        return None
    return (
        f"path {path} cannot run on dataplane ebpf: its socket load balancing hooks connect() in the "
        "cluster's pods only (Cilium's per-packet NodePort programs are left out), and this path's clients "
        "are outside the cluster: use nftables, iptables or ipvs"
    )


def local_pods(status: ClusterStatus, node: str) -> list[str]:
    """The ready echo pods on ``node``: all that a NodePort with externalTrafficPolicy Local reaches."""
    return [pod.name for pod in status.targets() if pod.node == node]


def no_local_pod(status: ClusterStatus, node: str) -> str:
    """What a node without a ready pod does with outside traffic to its NodePort under Local."""
    if status.dataplane.partition(":")[0] == "ipvs":
        return f"{node} has no ready pod, its NodePort virtual server has no real server and IPVS refuses"
    return f"{node} has no ready pod, its NodePort drops the traffic (kube-proxy: no local endpoints)"


class NodePortPath:
    name = "nodeport"
    options: tuple[str, ...] = tuple(addressing.node_name(i) for i in range(ENTRY_NODES))
    proxy: str | None = None
    traffic_policy = True
    outside = True

    def missing(self, provider: str) -> str | None:
        if provider != "netns":
            return f"path nodeport is built for the netns provider, not {provider}: use --provider netns"
        return None

    def refuses(self, dataplane: str) -> str | None:
        return refuses_ebpf(self.name, dataplane)

    def cluster_needs(self, option: str, *, sources: int) -> Mapping[str, int]:
        return {"clients": sources}

    def decision(self, option: str, status: ClusterStatus | None = None) -> str:
        node, policy = policy_of(option)
        if policy == "Cluster":
            return (
                f"Balanced per connection at the entered node ({node}'s NodePort, externalTrafficPolicy "
                "Cluster): any pod on any node, whichever connection it is."
            )
        pods = local_pods(status, node) if status is not None else None
        if pods == []:
            assert status is not None
            return (
                f"Not balanced: externalTrafficPolicy Local: {no_local_pod(status, node)}, so every request "
                "entering there fails."
            )
        which = f" ({', '.join(pods)})" if pods else ""
        return (
            f"Balanced per connection at the entered node ({node}'s NodePort, externalTrafficPolicy Local): "
            f"only that node's own ready pods{which}, the client's address kept."
        )

    @contextlib.contextmanager
    def enter(self, cluster: Cluster, option: str) -> Iterator[Entry]:
        node, policy = policy_of(option)
        status = cluster.status()
        if node not in status.nodes:
            raise RunError(
                f"path nodeport:{node}: cluster {cluster.name} has nodes {', '.join(status.nodes)}"
            )
        if not status.clients():
            raise RunError(f"path nodeport: cluster {cluster.name} has no client namespace outside its pods")
        node_ip = addressing.node_ip(status.nodes.index(node))
        set_traffic_policy(cluster, policy)
        try:
            yield Entry(host=f"http://{node_ip}:{status.service.node_port}", outside=True)
        finally:
            if policy != "Cluster":
                set_traffic_policy(cluster, "Cluster")


PATH = NodePortPath()
