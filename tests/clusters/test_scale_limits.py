"""Scaling past what the cluster or the machine holds is refused, and a scale that fails half-way rolls back.

One real cluster (one node, so its /24 is the nearest limit). Each way of scaling too far — the CLI's own
check, the supervisor's exact address check when asked directly, new pods that die while starting — must
leave the cluster exactly as it was (same pods, same addresses, same endpoints) and still serving from its
old pods; afterwards a good scale gets the names and addresses it would have got anyway.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from balancebench.cli import main
from balancebench.clusters.base import ClusterSpec, ClusterStatus
from balancebench.clusters.netns import NetnsProvider
from balancebench.clusters.netns.provider import DEFAULT_ECHO_COMMAND, NetnsCluster
from balancebench.errors import ClusterError, InvalidInput
from tests.clusters.conftest import PodClient, require, unique_name

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """While this file exists, new echo host processes exit at start-up (a real failure half-way through a
    scale: echo-3's own host dies while echo-2 already runs in the shared one)."""
    return tmp_path_factory.mktemp("scale") / "fail-new-pods"


@pytest.fixture(scope="module")
def cluster(marker: Path) -> Iterator[NetnsCluster]:
    require("nftables")
    echo = shlex.join(DEFAULT_ECHO_COMMAND)
    script = (
        f'if [ -e {shlex.quote(str(marker))} ]; then echo "told to fail" >&2; exit 1; fi; exec {echo} "$@"'
    )
    provider = NetnsProvider(echo_command=("sh", "-c", script, "echo"))
    # echo-3 has flags of its own, so it gets an echo host process of its own, started when it is.
    spec = ClusterSpec(
        name=unique_name("scale"),
        nodes=1,
        targets=2,
        sources=1,
        dataplane="nftables",
        pod_echo_args={"echo-3": ("--latency", "0ms")},
    )
    with provider.up(spec) as running:
        yield running


def _serving(cluster: NetnsCluster) -> set[str]:
    client = PodClient(cluster, "source-0")
    try:
        return set(client.pods("new", 40))
    finally:
        client.close()


def _assert_unchanged(cluster: NetnsCluster, before: ClusterStatus) -> None:
    assert cluster.status() == before
    assert _serving(cluster) == {"echo-0", "echo-1"}


def test_scale_past_the_limits_leaves_the_cluster_serving_with_its_old_pods(
    cluster: NetnsCluster, marker: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = cluster.status()
    assert [p.name for p in before.targets()] == ["echo-0", "echo-1"]
    assert _serving(cluster) == {"echo-0", "echo-1"}

    # 1. The CLI refuses what a node's /24 (or this machine's memory) cannot hold, naming the limit.
    assert main(["cluster", "scale", cluster.name, "--targets", "100000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a node's /24 holds 253 pods" in err, err
    _assert_unchanged(cluster, before)

    # 2. Asked directly, the supervisor checks the addresses itself, before it creates anything.
    with pytest.raises(InvalidInput, match="free pod addresses left in its /24"):
        cluster._request("scale", targets=300)
    _assert_unchanged(cluster, before)

    # 3. Half-way: the new pods are wired and started, then die; everything is rolled back.
    marker.write_text("")
    try:
        with pytest.raises(ClusterError, match="exited during start-up"):
            cluster.scale(4)
    finally:
        marker.unlink()
    _assert_unchanged(cluster, before)

    # Rolled back means rolled back: the next pod gets the name and address it would have got anyway.
    after = cluster.scale(3)
    new = [p for p in after.targets(ready_only=False) if p.name not in {"echo-0", "echo-1"}]
    assert [p.name for p in new] == ["echo-2"]
    taken = {p.ip for p in before.pods}
    assert new[0].ip not in taken and new[0].ip.rsplit(".", 1)[1] == str(2 + len(taken))
    assert _serving(cluster) == {"echo-0", "echo-1", "echo-2"}
    cluster.scale(2)


def test_scale_refuses_more_pods_than_memory_holds(
    cluster: NetnsCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The memory limit with this machine's own MemAvailable seen as 128 MB: 102 more echo pods (1 MB each,
    in the running echo hosts) fit."""
    from balancebench import limits

    before = cluster.status()
    small = limits.Machine(mem_available_mb=128, open_files=limits.Machine.here().open_files)
    monkeypatch.setattr(limits.Machine, "here", classmethod(lambda cls: small))
    assert main(["cluster", "scale", cluster.name, "--targets", "200"]) == 2
    err = capsys.readouterr().err
    assert "198 more echo pods need ~198 MB (1 MB per echo pod, measured)" in err, err
    assert "128 MB MemAvailable: at most 102 more echo pods fit" in err, err
    assert cluster.status() == before
