"""Cluster providers behind one small interface (after kind's ``Provider``); ``registry`` lists them.

>>> from balancebench.clusters import ClusterSpec, registry
>>> with registry.get("netns").up(ClusterSpec(name="dev", targets=6)) as cluster:
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
)

__all__ = [
    "DATAPLANES",
    "Cluster",
    "ClusterSpec",
    "ClusterStatus",
    "Pod",
    "Provider",
    "Service",
]
