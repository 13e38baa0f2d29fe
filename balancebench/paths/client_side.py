"""The ``client-side`` path: the client gets the ready endpoints, as a headless Service's DNS answers them,
and picks one per request itself (round-robin, as gRPC's ``round_robin``, or at random).

The endpoint list is read once when the cell starts, like a client that resolved the name once; pods that
change during the cell are not followed (a client would only see them on its next resolution).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from balancebench.clusters.base import Cluster, ClusterStatus
from balancebench.errors import RunError
from balancebench.paths.base import Entry, settled_status


class ClientSidePath:
    name = "client-side"
    options: tuple[str, ...] = ("round_robin", "random")
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
        how = "in turn" if option == "round_robin" else "at random"
        return f"Balanced per request at the client, which picks a ready endpoint {how} for each request."

    @contextlib.contextmanager
    def enter(self, cluster: Cluster, option: str) -> Iterator[Entry]:
        status = settled_status(cluster)
        ready = status.targets()
        if not ready:
            raise RunError(f"cluster {cluster.name}: no ready echo pod to list as an endpoint")
        endpoints = ",".join(f"{pod.ip}:{status.service.target_port}" for pod in ready)
        yield Entry(
            host=f"http://{ready[0].ip}:{status.service.target_port}",
            locust_options=("--endpoints", endpoints, "--balance", option),
        )


PATH = ClientSidePath()
