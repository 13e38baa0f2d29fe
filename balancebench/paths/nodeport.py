"""The ``nodeport`` path: clients dial a node's address at the Service's NodePort, and that node's dataplane
picks a pod for each new connection, on any node (``externalTrafficPolicy: Cluster``, SNAT to the node).

``nodeport`` enters node-0; ``nodeport:node-1`` another node. The clients are the source pods (they reach
the node's address over the node network), not namespaces outside the pod network. Only
``externalTrafficPolicy: Cluster`` is built: kube-proxy treats NodePort traffic that comes from a pod as
Cluster even under Local, so Local needs clients outside the pod network first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from balancebench.clusters.base import Cluster
from balancebench.clusters.netns import addressing
from balancebench.errors import RunError
from balancebench.paths.base import Entry

ENTRY_NODES = 8
"""Nodes a cell may enter by name (``nodeport:node-0`` … ``node-7``); a scenario has at most 16 nodes."""


class NodePortPath:
    name = "nodeport"
    options: tuple[str, ...] = tuple(addressing.node_name(i) for i in range(ENTRY_NODES))
    proxy: str | None = None

    def missing(self, provider: str) -> str | None:
        if provider != "netns":
            return f"path nodeport is built for the netns provider, not {provider}: use --provider netns"
        return None

    def cluster_needs(self, option: str) -> Mapping[str, int]:
        return {}

    def decision(self, option: str) -> str:
        return (
            f"Balanced per connection at the entered node ({option}'s NodePort, externalTrafficPolicy "
            "Cluster): any pod on any node, whichever connection it is."
        )

    @contextlib.contextmanager
    def enter(self, cluster: Cluster, option: str) -> Iterator[Entry]:
        status = cluster.status()
        if option not in status.nodes:
            raise RunError(
                f"path nodeport:{option}: cluster {cluster.name} has nodes {', '.join(status.nodes)}"
            )
        node_ip = addressing.node_ip(status.nodes.index(option))
        yield Entry(host=f"http://{node_ip}:{status.service.node_port}")


PATH = NodePortPath()
