"""`balancebench cluster …` end to end: a real cluster driven by the real command line.

Bad input is one line on stderr, exit 2, no traceback, and nothing created; good input works from `up` to
an idempotent `down`, with `exec` passing stdin, stdout and the exit code straight through.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from balancebench.cli import main
from balancebench.clusters.netns import NetnsProvider, runtime
from balancebench.clusters.netns.dataplanes.ipvs import kernel_has_ipvs
from tests.clusters.conftest import require, unique_name

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

FRESH = unique_name("cli-fresh")


def balancebench(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "balancebench", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def running() -> Iterator[str]:
    require("nftables")
    name = unique_name("cli")
    up = balancebench("cluster", "up", "--name", name, "--targets", "3", "--sources", "1")
    assert up.returncode == 0, up.stderr
    assert f"cluster {name} is up" in up.stdout
    try:
        yield name
    finally:
        balancebench("cluster", "down", name)


def test_status_json_is_the_contract(running: str) -> None:
    done = balancebench("cluster", "status", running, "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["dataplane"] == "nftables"
    assert status["service"] == {
        "cluster_ip": "10.96.0.10",
        "port": 80,
        "node_port": 30080,
        "target_port": 8080,
        "external_traffic_policy": "Cluster",
    }
    pods = {pod["name"]: pod for pod in status["pods"]}
    assert set(pods) == {"echo-0", "echo-1", "echo-2", "source-0"}
    assert pods["echo-1"]["role"] == "target" and pods["source-0"]["role"] == "source"
    assert pods["echo-1"]["node"] == "node-1" and pods["echo-1"]["ip"].startswith("10.244.1.")
    table = balancebench("cluster", "status", running)
    assert table.returncode == 0 and "echo-2" in table.stdout and "10.96.0.10:80" in table.stdout
    assert running in balancebench("cluster", "list").stdout.split()


def test_exec_passes_stdin_stdout_and_exit_code_through(running: str) -> None:
    program = (
        "import os, sys, urllib.request as u\n"
        "body = u.urlopen('http://10.96.0.10/').read().decode()\n"
        "print(os.environ['POD_NAME'], os.environ['NODE_NAME'], sys.stdin.read().upper(), body)\n"
        "sys.exit(3)"
    )
    done = balancebench(
        "cluster", "exec", running, "source-0", "--", sys.executable, "-c", program, stdin="hi"
    )
    assert done.returncode == 3, done.stderr
    pod, node, echoed, body = done.stdout.split(" ", 3)
    assert (pod, node, echoed) == ("source-0", "node-0", "HI")
    assert json.loads(body)["pod"] in {"echo-0", "echo-1", "echo-2"}


def test_exec_into_a_node_shows_its_rules(running: str) -> None:
    done = balancebench(
        "cluster", "exec", running, "node-1", "--", "nft", "list", "table", "ip", "kube-proxy"
    )
    assert done.returncode == 0, done.stderr
    assert "numgen random mod 3 vmap" in done.stdout


BAD_INPUT = [
    (["up", "--name", FRESH, "--targets", "0"], "--targets must be at least 1"),
    (["up", "--name", FRESH, "--dataplane", "bpf"], "unknown dataplane 'bpf'"),
    (["up", "--name", "Not_A_Name"], "invalid cluster name"),
    (["up", "--name", FRESH, "--nodes", "500"], "--nodes must be at most"),
    (["up", "--name", "{running}"], "already exists"),
    (["exec", "{running}", "echo-9", "--", "true"], "no pod 'echo-9'"),
    (["exec", "{running}", "source-0"], "nothing to run"),
    (["kill", "{running}", "source-7"], "no pod 'source-7'"),
    (["scale", "{running}", "--targets", "-1"], "must be 0 or more"),
    (["set-ready", "{running}", "source-0", "--not-ready"], "only echo pods have a readiness probe"),
    (["status", FRESH], f"no cluster named '{FRESH}'"),
    (["up", "--name", FRESH, "--dataplane", "ipvs", "--node-kernel", "host"], "which this kernel lacks"),
    (
        ["up", "--name", FRESH, "--dataplane", "ipvs:fast"],
        "unknown dataplane 'ipvs:fast': choose nftables, iptables, ipvs, ebpf, cilium or ipvs:SCHED "
        "(SCHED one of rr, wrr, lc, wlc, lblc, lblcr, sh, dh, sed, nq, mh)",
    ),
    (["up", "--name", FRESH, "--dataplane", "nftables:rr"], "unknown dataplane 'nftables:rr'"),
    (
        ["up", "--name", FRESH, "--dataplane", "nftables", "--node-kernel", "uml"],
        "does not run on uml node kernels",
    ),
    (["up", "--name", FRESH, "--node-kernel", "vm"], "unknown node kernel 'vm'"),
    (
        ["up", "--name", FRESH, "--echo-arg=--no-such-flag"],
        "rejected its arguments: echo: unrecognized arguments: --no-such-flag",
    ),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT)
def test_bad_input_is_one_line_and_exit_2(
    running: str, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if "ipvs" in args and kernel_has_ipvs():
        pytest.skip("this kernel has IPVS, so --dataplane ipvs is not bad input here")
    before = NetnsProvider().get(running).status()
    code = main(["cluster", *(arg.format(running=running) for arg in args)])  # in-process: no import cost
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("balancebench: "), err
    assert message in err
    # nothing created, nothing changed
    for path in (runtime.lock_path(FRESH), runtime.socket_path(FRESH), runtime.log_path(FRESH)):
        assert not path.exists()
    cgroup = runtime.cluster_cgroup(FRESH)
    assert cgroup is None or not cgroup.exists()
    assert NetnsProvider().get(running).status() == before


def test_scale_kill_and_down_twice(running: str) -> None:
    scaled = balancebench("cluster", "scale", running, "--targets", "4")
    assert scaled.returncode == 0, scaled.stderr
    assert "4 echo pods: echo-0, echo-1, echo-2, echo-3" in scaled.stdout
    killed = balancebench("cluster", "kill", running, "echo-0")
    assert killed.returncode == 0, killed.stderr
    status = json.loads(balancebench("cluster", "status", running, "--json").stdout)
    assert [p["name"] for p in status["pods"] if p["role"] == "target"] == ["echo-1", "echo-2", "echo-3"]
    first, second = balancebench("cluster", "down", running), balancebench("cluster", "down", running)
    assert (first.returncode, second.returncode) == (0, 0)
    assert first.stdout == f"cluster {running} removed\n"
    assert second.stdout == f"no cluster named {running}: nothing to remove\n"
    assert running not in balancebench("cluster", "list").stdout.split()
