"""Cluster providers behind one small interface (after kind's ``Provider``).

>>> from balancebench.clusters import ClusterSpec, get_provider
>>> with get_provider("netns").up(ClusterSpec(name="dev", targets=6)) as cluster:
...     print(cluster.status().service.cluster_ip)
"""

from balancebench.clusters.base import (
    DATAPLANES,
    Cluster,
    ClusterSpec,
    ClusterStatus,
    Pod,
    Provider,
    Service,
    get_provider,
)

__all__ = [
    "DATAPLANES",
    "Cluster",
    "ClusterSpec",
    "ClusterStatus",
    "Pod",
    "Provider",
    "Service",
    "get_provider",
]
