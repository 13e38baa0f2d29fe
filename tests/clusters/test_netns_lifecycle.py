"""A netns cluster leaves nothing behind, however it ends; and it can be found again by its name.

Each case brings a cluster up, records what it is made of as seen from the host (its sandbox's
namespaces and processes, its cgroup, the BPF programs and maps attached there), ends it one way, and
checks every one of those is gone: namespaces, processes, links, rules, BPF objects, cgroups, files.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from balancebench.clusters.base import ClusterSpec
from balancebench.clusters.netns import NetnsProvider, runtime
from balancebench.clusters.netns.provider import check_machine
from balancebench.errors import MissingFeature
from tests.clusters.conftest import PodClient, Traces, _cmdline, leak_test_dataplane, require, unique_name

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

DATAPLANE = leak_test_dataplane()
BALANCEBENCH = [sys.executable, "-m", "balancebench"]


def _spec(tag: str) -> ClusterSpec:
    return ClusterSpec(name=unique_name(tag), nodes=2, targets=2, sources=1, dataplane=DATAPLANE)


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _end_with_down(spec: ClusterSpec) -> Traces:
    cluster = NetnsProvider().up(spec, detach=True)
    client = cluster.exec("source-0", ["sleep", "60"])  # programs run in a pod go with the cluster
    traces = Traces.of(spec.name)
    assert NetnsProvider().delete(spec.name) is True
    assert NetnsProvider().delete(spec.name) is False  # idempotent: nothing left to remove
    assert client.wait(timeout=10) != 0
    return traces


def _end_with_down_after_a_pod_died_under_a_connection(spec: ClusterSpec) -> Traces:
    """A connection to a killed pod leaves its client's socket retransmitting into the void (for minutes,
    keeping its namespace and cgroup alive in the kernel): down must not wait for that to end."""
    cluster = NetnsProvider().up(spec, detach=True)
    client = PodClient(cluster, "source-0")
    try:
        pod = client.run("keep", 1)[0].split()[0]
        cluster.kill(pod)
        assert client.run("keep", 1)[0].startswith("error")
        traces = Traces.of(spec.name)
    finally:
        client.close()
    assert NetnsProvider().delete(spec.name) is True
    return traces


def _end_with_sigkill_of_supervisor(spec: ClusterSpec) -> Traces:
    cluster = NetnsProvider().up(spec, detach=True)
    client = cluster.exec("echo-1", ["sleep", "60"])
    traces = Traces.of(spec.name)
    pid = runtime.find_supervisor_pid(spec.name)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert client.wait(timeout=10) != 0
    return traces


def _end_with_sigkill_of_keeper(spec: ClusterSpec) -> Traces:
    """The keeper is what cleans host objects up; without it, the next discovery call does."""
    cluster = NetnsProvider().up(spec, detach=True)
    traces = Traces.of(spec.name)
    assert cluster._keeper is not None
    cluster._keeper.kill()
    cluster._keeper.wait()
    _wait(lambda: runtime.find_supervisor_pid(spec.name) is None, "the sandbox to die with its keeper")
    assert spec.name not in NetnsProvider().list()  # discovery removes what the dead cluster left
    return traces


def _end_with_ctrl_c_during_up(spec: ClusterSpec) -> Traces:
    # Echo pods that never report ready keep `up` waiting for as long as the test needs.
    up = ["cluster", "up", "--name", spec.name, "--dataplane", spec.dataplane, "--targets", "2"]
    up += ["--node-kernel", spec.node_kernel]
    cli = subprocess.Popen(
        [*BALANCEBENCH, *up, "--sources", "1", "--echo-arg=--not-ready"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait(lambda: runtime.find_supervisor_pid(spec.name) is not None, "the supervisor to start")
    traces = Traces.of(spec.name)
    cli.send_signal(signal.SIGINT)
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 130, (out, err)
    assert b"Traceback" not in err
    return traces


OWNER = textwrap.dedent(
    """
    import sys, time
    from balancebench.clusters.base import ClusterSpec
    from balancebench.clusters.netns import NetnsProvider
    NetnsProvider().up(ClusterSpec(name=sys.argv[1], nodes=2, targets=2, sources=1, dataplane=sys.argv[2]))
    print("ready", flush=True)
    time.sleep(120)
    """
)


def _end_with_death_of_attached_owner(spec: ClusterSpec) -> Traces:
    """A benchmark run's cluster is attached: it goes when its owner goes, even by SIGKILL."""
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, spec.name, spec.dataplane],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert owner.stdout is not None
    line = owner.stdout.readline()
    assert line == b"ready\n", owner.communicate(timeout=30)
    traces = Traces.of(spec.name)
    owner.kill()
    owner.wait()
    return traces


@pytest.mark.parametrize(
    ("tag", "end"),
    [
        ("down", _end_with_down),
        ("pod-died", _end_with_down_after_a_pod_died_under_a_connection),
        ("kill-sup", _end_with_sigkill_of_supervisor),
        ("kill-keeper", _end_with_sigkill_of_keeper),
        ("ctrl-c", _end_with_ctrl_c_during_up),
        ("owner-dies", _end_with_death_of_attached_owner),
    ],
)
def test_nothing_remains(tag: str, end: Callable[[ClusterSpec], Traces]) -> None:
    require(DATAPLANE)
    spec = _spec(tag)
    try:
        traces = end(spec)
        assert traces.processes, "the sandbox had no processes to check"
        if DATAPLANE == "ebpf" and end is not _end_with_ctrl_c_during_up:
            assert traces.bpf_programs, "connect4 was not attached to the cluster's cgroup"
        traces.assert_gone()
    finally:
        NetnsProvider().delete(spec.name)


def _uml_files() -> set[str]:
    """Files UML could leave on the host: its default control folder and memory files in /tmp."""
    found = {str(p) for p in Path("/tmp").glob("vm_file-*")}
    uml_dir = Path.home() / ".uml"
    return found | ({str(uml_dir)} if uml_dir.exists() else set())


@pytest.mark.parametrize(
    ("tag", "end"),
    [
        ("uml-down", _end_with_down),
        ("uml-kill-sup", _end_with_sigkill_of_supervisor),
        ("uml-ctrl-c", lambda spec: _ctrl_c_once_uml_runs(spec)),
    ],
)
def test_nothing_remains_of_uml_nodes(tag: str, end: Callable[[ClusterSpec], Traces]) -> None:
    """UML node kernels are processes of the sandbox with TAPs inside it: they go with it, however it ends."""
    try:
        check_machine("ipvs", "uml")
    except MissingFeature as exc:
        pytest.skip(str(exc))
    before = _uml_files()
    spec = dataclasses.replace(_spec(tag), dataplane="ipvs", node_kernel="uml")
    try:
        traces = end(spec)
        kernels = [pid for pid, command in traces.commands.items() if command.startswith("linux.uml")]
        assert kernels, "no UML kernel process was seen"
        traces.assert_gone()
        assert not [pid for pid in kernels if os.path.exists(f"/proc/{pid}")]
        assert _uml_files() <= before
    finally:
        NetnsProvider().delete(spec.name)


def _ctrl_c_once_uml_runs(spec: ClusterSpec) -> Traces:
    """Ctrl-C while the node kernels run and `up` waits for pods that never get ready."""
    up = ["cluster", "up", "--name", spec.name, "--dataplane", "ipvs", "--node-kernel", "uml"]
    cli = subprocess.Popen(
        [*BALANCEBENCH, *up, "--targets", "2", "--sources", "1", "--echo-arg=--not-ready"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait(lambda: runtime.find_supervisor_pid(spec.name) is not None, "the supervisor to start")
    _wait(lambda: any("linux.uml" in _cmdline(pid) for pid in Traces.of(spec.name).processes), "UML to boot")
    traces = Traces.of(spec.name)
    cli.send_signal(signal.SIGINT)
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 130, (out, err)
    assert b"Traceback" not in err
    return traces


def test_detached_cluster_is_found_again_by_name() -> None:
    require("nftables")
    first, second = _spec("found-a"), _spec("found-b")
    provider = NetnsProvider()
    try:
        provider.up(first, detach=True)
        provider.up(second, detach=True)  # two clusters with different names coexist
        assert {first.name, second.name} <= set(provider.list())
        found = provider.get(first.name)
        assert found.status().name == first.name
        assert [p.name for p in found.status().targets()] == ["echo-0", "echo-1"]
    finally:
        provider.delete(first.name)
        provider.delete(second.name)
    assert not {first.name, second.name} & set(provider.list())
