"""The ``clusterip`` path: clients dial the Service's ClusterIP; the dataplane on the source pod's node
picks a pod for each new connection (kube-proxy, Cilium socket LB), and every request on it goes there."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from balancebench.clusters.base import Cluster, ClusterStatus
from balancebench.paths.base import Entry


class ClusterIpPath:
    name = "clusterip"
    options: tuple[str, ...] = ()
    proxy: str | None = None
    traffic_policy = False
    outside = False

    def missing(self, provider: str) -> str | None:
        return None

    def refuses(self, dataplane: str) -> str | None:
        return None

    def cluster_needs(self, option: str, *, sources: int) -> Mapping[str, int]:
        return {}

    def decision(self, option: str, status: ClusterStatus | None = None) -> str:
        return (
            "Balanced per connection at the source pod's node (the dataplane's pick when a connection opens)."
        )

    @contextlib.contextmanager
    def enter(self, cluster: Cluster, option: str) -> Iterator[Entry]:
        service = cluster.status().service
        yield Entry(host=f"http://{service.cluster_ip}:{service.port}")


PATH = ClusterIpPath()
