"""A cluster with a pod of its own for the Locust master (kind, existing) gets the master there.

Real Locust, real echo servers on loopback (the LoopbackCluster of test_loadrun): the master runs in the
``load_master`` pod, the workers in the source pods dial it, and every record still arrives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from balancebench.clusters.base import ClusterStatus, Pod
from balancebench.loadrun import run_cell
from tests.balancebench.test_loadrun import LoopbackCluster, a_cell, free_port


class WithMasterPod(LoopbackCluster):
    def __init__(self) -> None:
        super().__init__(targets=2, sources=2)
        self.started_in: list[tuple[str, str]] = []

    def status(self) -> ClusterStatus:
        status = super().status()
        master = Pod(name="locust-master-0", role="master", node="node-1", ip="127.0.0.1")
        return dataclasses.replace(status, load_master=master)

    def exec(self, pod: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None, **pipes):
        self.started_in.append((pod, "--master" if "--master" in argv else "--worker"))
        if pod == "locust-master-0":  # LoopbackCluster knows only its own pods
            return super().exec("client-0", argv, env={**(env or {}), "POD_NAME": pod}, **pipes)
        return super().exec(pod, argv, env=env, **pipes)


def test_the_master_runs_in_its_own_pod(tmp_path):
    with WithMasterPod() as cluster:
        cell = a_cell("loopback/keepalive", "keepalive", users_per_source=2, duration_s=3, warmup_s=0.5)
        result = run_cell(cluster, cell, tmp_path, master_port=free_port())
    result.raise_for_mismatch()
    assert result.records > 50 and result.records == result.server_requests
    assert cluster.started_in[0] == ("locust-master-0", "--master")
    assert sorted(cluster.started_in[1:]) == [("client-0", "--worker"), ("client-1", "--worker")]
