"""The largest embedded cluster this test machine allows: every pod answers as itself, a kill spares the rest.

The issue asks for 1,000 target pods; at 40 MB per echo pod (balancebench/limits.py, measured) that is
~40 GB, and each echo pod is its own Python process, so on the 2 shared cores of CI a cluster that size is
out of reach. The size here is the smaller of ``SCALE_TARGETS`` (60 by default: 15 pods on each of 4
nodes, measured at ~13 s to come up on an idle 2-core machine) and what this machine's MemAvailable holds;
the reason is printed (``pytest -s``). ``BALANCEBENCH_TEST_SCALE_TARGETS=N`` asks for another size.

The cluster comes up with ``STEP`` pods and is scaled out ``STEP`` at a time: each batch of echo processes
must answer within the supervisor's start-up window (30 s), and 60 Python processes importing at once on a
2-core machine loaded by other sessions (load ~18) did not (measured: none ready after 30 s).

Checked: each echo pod, dialed at its own address from a source pod, answers with its own name in
``X-Pod-Name``; the Service reaches only ready pods; after one pod is killed, the killed one answers no
more and every other pod, directly and through the Service, still does. No timing is asserted.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from balancebench import limits
from balancebench.clusters.base import ClusterSpec
from balancebench.clusters.netns import NetnsProvider
from balancebench.clusters.netns.provider import NetnsCluster
from tests.clusters.conftest import PodClient, require, unique_name

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NODES = 4
SCALE_TARGETS = 60
STEP = 12

PROBE = """
import http.client, json, sys
answers = {}
for name, ip, port in json.loads(sys.argv[1]):
    conn = http.client.HTTPConnection(ip, port, timeout=5)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        answers[name] = response.getheader("X-Pod-Name")
    except (OSError, http.client.HTTPException) as exc:
        answers[name] = "error " + type(exc).__name__
    finally:
        conn.close()
print(json.dumps(answers))
"""


def scale_size() -> tuple[int, str]:
    """How many echo pods this test brings up, and why that many."""
    asked = int(os.environ.get("BALANCEBENCH_TEST_SCALE_TARGETS", SCALE_TARGETS))
    machine = limits.Machine.here()
    fixed = 2 * limits.LOCUST_PROCESS_MB  # room for the source pods' client processes
    fits = math.floor((machine.mem_available_mb * limits.MEMORY_SHARE - fixed) / limits.ECHO_POD_MB)
    size = max(2, min(asked, fits))
    reason = (
        f"{size} echo pods on {NODES} nodes: asked {asked} (1,000 would need ~"
        f"{1000 * limits.ECHO_POD_MB / 1024:.0f} GB at {limits.ECHO_POD_MB:g} MB per echo pod, one Python "
        f"process each, on {os.cpu_count()} shared cores); {fits} fit in "
        f"{limits.MEMORY_SHARE:.0%} of {machine.mem_available_mb / 1024:.1f} GB MemAvailable"
    )
    return size, reason


@pytest.fixture(scope="module")
def big_cluster() -> Iterator[NetnsCluster]:
    require("nftables")
    targets, reason = scale_size()
    print(f"\ntest_netns_scale: {reason}")
    spec = ClusterSpec(
        name=unique_name("scale-big"),
        nodes=NODES,
        targets=min(STEP, targets),
        sources=1,
        dataplane="nftables",
    )
    with NetnsProvider().up(spec) as cluster:
        while len(cluster.status().targets(ready_only=False)) < targets:
            cluster.scale(min(targets, len(cluster.status().targets(ready_only=False)) + STEP))
        yield cluster


def _answers(cluster: NetnsCluster, pods: list[tuple[str, str, int]]) -> dict[str, str]:
    """What each pod, dialed at its own address from source-0, says its name is."""
    run = cluster.exec(
        "source-0",
        [sys.executable, "-c", PROBE, json.dumps(pods)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err.decode(errors="replace")
    answers: dict[str, str] = json.loads(out)
    return answers


def test_every_pod_answers_as_itself_and_a_kill_leaves_the_others_serving(big_cluster: NetnsCluster) -> None:
    targets, _ = scale_size()
    status = big_cluster.status()
    pods = status.targets(ready_only=False)
    assert len(pods) == targets and all(pod.ready for pod in pods)
    assert len({pod.node for pod in pods}) == NODES, "pods are spread over every node"
    port = status.service.target_port
    dial = [(pod.name, pod.ip, port) for pod in pods]

    assert _answers(big_cluster, dial) == {pod.name: pod.name for pod in pods}

    victim = pods[len(pods) // 2].name
    big_cluster.kill(victim)
    after = _answers(big_cluster, dial)
    assert after.pop(victim).startswith("error "), "the killed pod still answers"
    assert after == {pod.name: pod.name for pod in pods if pod.name != victim}

    client = PodClient(big_cluster, "source-0")
    try:
        through_service = client.pods("new", 4 * targets)
    finally:
        client.close()
    assert victim not in through_service and "error" not in through_service, through_service
    assert set(through_service) <= {pod.name for pod in pods}
    assert len(through_service) > 1, "the Service spread new connections over more than one pod"
