"""The embedded ``netns`` cluster provider: nodes and pods as network namespaces in one sandbox.

>>> from balancebench.clusters.netns import NetnsProvider
>>> from balancebench.clusters.base import ClusterSpec
>>> with NetnsProvider().up(ClusterSpec(name="dev", nodes=2, targets=6, sources=2)) as cluster:
...     print(cluster.status().service.cluster_ip)
10.96.0.10
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from balancebench.clusters.netns.provider import NetnsCluster, NetnsProvider

__all__ = ["NetnsCluster", "NetnsProvider"]


def __getattr__(name: str) -> Any:
    # Lazy, so the processes that run inside the sandbox (supervisor, podexec) start without the provider.
    if name in __all__:
        from balancebench.clusters.netns import provider

        return getattr(provider, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
