"""What the echo servers themselves counted: their ``/metrics`` read through the cluster, summed.

The one place that parses the echo servers' Prometheus text; a cell's records are checked against it, and
the runner and the scenario events read connection and request totals from it.

    >>> counts, unread = server_counts(cluster, ["echo-0", "echo-1"])
    >>> requests_total(cluster.pod_http("echo-0", "/metrics")[1].decode())
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client.parser import text_string_to_metric_families

from balancebench.clusters.base import Cluster
from balancebench.errors import BalancebenchError


def server_counts(
    cluster: Cluster, pods: Sequence[str], *, metric: str = "echo_requests_total"
) -> tuple[dict[str, int], list[str]]:
    """Each pod's cumulative ``echo_requests_total`` (all statuses), or another counter ``metric`` such as
    ``echo_connections_opened_total``, and the pods that could not be read."""
    counts: dict[str, int] = {}
    unread: list[str] = []
    for pod in pods:
        try:
            code, body = cluster.pod_http(pod, "/metrics")
        except (BalancebenchError, OSError):
            unread.append(pod)
            continue
        if code != 200:
            unread.append(pod)
            continue
        counts[pod] = int(metric_sum(body.decode("utf-8", "replace"), metric))
    return counts, unread


def requests_total(metrics_text: str) -> int:
    """The sum of ``echo_requests_total`` over its label sets in a Prometheus text exposition."""
    return int(metric_sum(metrics_text, "echo_requests_total"))


def metric_sum(metrics_text: str, name: str) -> float:
    """The sum of the samples called ``name`` over their label sets in a Prometheus text exposition."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == name
    )
