"""The embedded cluster at scale: up/down time and memory, dataplane sync time, reconnect cost per dataplane.

Functions for ``benchmarks/run_all.py`` (``make perf``); each returns a list of :class:`Row` (``what``,
``value``, ``unit``, ``note``: ``benchmarks.table.Row``), and none leaves anything behind:

- ``lifecycle_rows(sizes=(SMALL, LARGE), dataplane="nftables")``: per size, ``cluster up`` until every echo
  pod answers and the endpoints are programmed (s), the cluster's memory once up (GB: the sum of PSS of every
  process in its sandbox, and the drop of MemAvailable, which also counts the kernel's namespaces, links,
  sockets and rules but moves with everything else on a shared machine), and ``down`` until nothing is left
  (s). ``SMALL`` is 2 nodes / 6 echo / 2 source pods, ``LARGE`` 20 nodes / 1,000 echo / 20 source pods.
- ``sync_rows(endpoints=1000, dataplanes=None)``: per dataplane (each on the node kernel ``auto`` gives it:
  ipvs on User-Mode Linux nodes where the host has no IPVS), one full kube-proxy-shaped sync of
  ``endpoints`` endpoints into one node (ms), and the next sync with one endpoint fewer (ms), timed on a
  bare node in a sandbox of its own (no pods: what is timed is rendering and applying the rules).
- ``reconnect_rows(seconds=3, cells=None)``: per dataplane and node kernel, requests/s through the Service
  from 2 source pods (wrk, 10 connections each) kept alive and with a new connection per request, and their
  ratio, the reconnect cost (2 nodes, 6 echo pods).
- ``all_rows(quick=False)``: all three (``quick``: the small size only, 200 endpoints, 2 s per wrk run).

    .venv/bin/python -m benchmarks.cluster_scale               # prints the table
    .venv/bin/python -m benchmarks.cluster_scale --quick
    .venv/bin/python -m benchmarks.cluster_scale --only sync --endpoints 1000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from balancebench.clusters.base import DATAPLANES, ClusterSpec
from balancebench.clusters.netns import NetnsCluster, NetnsProvider, runtime
from balancebench.clusters.netns.provider import check_machine
from balancebench.errors import BalancebenchError, MissingFeature
from benchmarks.table import Row, format_rows


@dataclass(frozen=True, kw_only=True)
class Size:
    """A cluster size to bring up."""

    nodes: int
    targets: int
    sources: int

    @property
    def label(self) -> str:
        return f"{self.nodes} nodes, {self.targets:,} echo, {self.sources} source pods"


SMALL = Size(nodes=2, targets=6, sources=2)
LARGE = Size(nodes=20, targets=1000, sources=20)
GOALS = {"up s at 1,000 pods": 20.0, "memory GB at 1,000 pods": 4.0}
WRK_CONNECTIONS = 10
_REPO = Path(__file__).resolve().parents[1]


def _name(what: str) -> str:
    return f"cs{os.getpid()}-{what}"[:32]


def _mem_available_mb() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return 0.0


def sandbox_pss_mb(supervisor_pid: int) -> float:
    """Sum of PSS (MB) of every process in the PID namespace whose PID 1 is ``supervisor_pid``."""
    sandbox = os.stat(f"/proc/{supervisor_pid}/ns/pid")
    total_kb = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{entry.name}/ns/pid")
            if (ns.st_dev, ns.st_ino) != (sandbox.st_dev, sandbox.st_ino):
                continue
            with open(f"/proc/{entry.name}/smaps_rollup") as smaps:
                for line in smaps:
                    if line.startswith("Pss:"):
                        total_kb += int(line.split()[1])
                        break
        except OSError:
            continue  # gone meanwhile, or a kernel thread
    return total_kb / 1024


def _supervisor_pid(cluster: NetnsCluster) -> int:
    pid = runtime.find_supervisor_pid(cluster.name)
    if pid is None:
        raise RuntimeError(f"cluster {cluster.name}: no supervisor process found")
    return pid


def lifecycle_rows(sizes: Sequence[Size] = (SMALL, LARGE), *, dataplane: str = "nftables") -> list[Row]:
    """``cluster up`` / memory / ``down`` per size (see the module docstring)."""
    rows: list[Row] = []
    for size in sizes:
        spec = ClusterSpec(
            name=_name(f"up{size.targets}"),
            nodes=size.nodes,
            targets=size.targets,
            sources=size.sources,
            dataplane=dataplane,
        )
        before = _mem_available_mb()
        started = time.monotonic()
        try:
            cluster = NetnsProvider().up(spec)
        except BalancebenchError as exc:
            rows.append(Row(f"cluster up ({size.label}, {dataplane})", None, "s", f"refused: {exc}"))
            continue
        up_s = time.monotonic() - started
        try:
            ready = len(cluster.status().targets())
            pss_mb = sandbox_pss_mb(_supervisor_pid(cluster))
            drop_mb = before - _mem_available_mb()
        finally:
            stopping = time.monotonic()
            cluster.down()
            down_s = time.monotonic() - stopping
        note = "" if ready == size.targets else f"only {ready} of {size.targets} ready"
        goal_up = f"goal <= {GOALS['up s at 1,000 pods']:g}" if size.targets >= 1000 else ""
        goal_mem = f"goal <= {GOALS['memory GB at 1,000 pods']:g}" if size.targets >= 1000 else ""
        rows += [
            Row(f"cluster up ({size.label}, {dataplane}, until all answer)", up_s, "s", note or goal_up),
            Row(f"cluster memory, sum of PSS ({size.label})", pss_mb / 1024, "GB", goal_mem),
            Row(f"cluster memory, MemAvailable drop ({size.label})", drop_mb / 1024, "GB", "shared machine"),
            Row(f"cluster down ({size.label}, until nothing remains)", down_s, "s"),
        ]
    return rows


def time_sync_here(dataplane: str, kernel: str, count: int, name: str) -> dict[str, float]:
    """Run as PID 1 of a sandbox of its own: one bare node, ``count`` endpoints synced, then one fewer."""
    import asyncio

    from balancebench.clusters.base import Service
    from balancebench.clusters.netns import addressing, kernels
    from balancebench.clusters.netns.dataplanes import DataplaneContext, Endpoint, create, needs_cgroups
    from balancebench.clusters.netns.runtime import cluster_cgroup, remove_cgroup_tree

    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"], check=True)
    logs = Path("/run/balancebench/logs")
    logs.mkdir(parents=True)
    nodes = kernels.create(kernel, nodes=1, dataplane=dataplane, cluster=name, log_dir=logs)
    cgroup = cluster_cgroup(name) if needs_cgroups(dataplane) else None
    if cgroup is not None:
        cgroup.mkdir()
    try:
        nodes.build([])
        asyncio.run(nodes.wait_ready(time.monotonic() + 60))
        service = Service(cluster_ip=addressing.CLUSTER_IP, port=80, node_port=30080, target_port=8080)
        context = DataplaneContext(
            nodes=nodes.dataplane_nodes(),
            service=service,
            pod_cidr=addressing.POD_CIDR,
            service_cidr=addressing.SERVICE_CIDR,
            cgroup=str(cgroup) if cgroup is not None else None,
            state_dir="/run/balancebench",
        )
        plane = create(dataplane, context)
        plane.setup()
        endpoints = [
            Endpoint(pod=f"echo-{i}", ip=f"10.244.{i // 250}.{i % 250 + 2}", port=8080) for i in range(count)
        ]
        started = time.perf_counter()
        plane.sync(endpoints)
        full = time.perf_counter() - started
        started = time.perf_counter()
        plane.sync(endpoints[1:])
        one_less = time.perf_counter() - started
        return {"full_ms": full * 1000, "one_less_ms": one_less * 1000}
    finally:
        nodes.before_teardown()
        for process in nodes.processes():
            process.kill()
        if cgroup is not None:
            remove_cgroup_tree(cgroup)


def sync_rows(endpoints: int = 1000, dataplanes: Sequence[str] | None = None) -> list[Row]:
    """One node's full sync at ``endpoints`` endpoints, and the next with one fewer, per dataplane."""
    rows: list[Row] = []
    for dataplane in dataplanes or DATAPLANES:
        try:
            kernel = check_machine(dataplane, "auto")
        except MissingFeature as exc:
            rows.append(Row(f"dataplane sync, {dataplane}", None, "ms", f"skipped: {exc}"))
            continue
        sandbox = ["unshare", "--pid", "--fork", "--net", "--mount", "--mount-proc", "--kill-child"]
        argv = [*sandbox, sys.executable, "-m", "benchmarks.cluster_scale", "--sync-child", dataplane, kernel]
        done = subprocess.run(
            [*argv, str(endpoints), _name(f"sync-{dataplane}")],
            cwd=_REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            rows.append(Row(f"dataplane sync, {dataplane}", None, "ms", f"failed: {tail[0]}"))
            continue
        timing = json.loads(done.stdout.strip().splitlines()[-1])
        where = f"{dataplane} on a {kernel} node"
        rows += [
            Row(f"dataplane sync, {where}, {endpoints:,} endpoints (full)", timing["full_ms"], "ms"),
            Row(f"dataplane sync, {where}, then {endpoints - 1:,}", timing["one_less_ms"], "ms"),
        ]
    return rows


def _wrk_rate(cluster: NetnsCluster, seconds: int, *, new_per_request: bool) -> float:
    """Requests/s of wrk in both source pods at once (their rates add up)."""
    url = f"http://{cluster.status().service.cluster_ip}/"
    extra = ["-H", "Connection: close"] if new_per_request else []
    argv = ["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s", *extra, url]
    runs = [cluster.exec(source, argv, stdout=subprocess.PIPE) for source in ("source-0", "source-1")]
    total = 0.0
    for run in runs:
        out, _ = run.communicate(timeout=seconds + 60)
        match = re.search(r"Requests/sec:\s+([\d.]+)", out.decode())
        if run.returncode != 0 or match is None:
            raise RuntimeError(f"wrk failed in a source pod: {out.decode()[-300:]}")
        total += float(match[1])
    return total


RECONNECT_CELLS = (
    ("nftables", "host"),
    ("iptables", "host"),
    ("ebpf", "host"),
    ("iptables", "uml"),
    ("ipvs", "uml"),
)


def reconnect_rows(seconds: int = 3, cells: Sequence[tuple[str, str]] = RECONNECT_CELLS) -> list[Row]:
    """Kept-alive vs new-connection-per-request requests/s per dataplane and node kernel."""
    if shutil.which("wrk") is None:
        return [Row("reconnect cost", None, "x", "wrk is not installed: run scripts/setup.sh")]
    rows: list[Row] = []
    for dataplane, kernel in cells:
        where = f"{dataplane} on {kernel} nodes"
        try:
            check_machine(dataplane, kernel)
        except MissingFeature as exc:
            rows.append(Row(f"reconnect cost, {where}", None, "x", f"skipped: {exc}"))
            continue
        spec = ClusterSpec(
            name=_name(f"rc-{dataplane}-{kernel}"),
            nodes=SMALL.nodes,
            targets=SMALL.targets,
            sources=SMALL.sources,
            dataplane=dataplane,
            node_kernel=kernel,
        )
        with NetnsProvider().up(spec) as cluster:
            kept = _wrk_rate(cluster, seconds, new_per_request=False)
            new = _wrk_rate(cluster, seconds, new_per_request=True)
        rows += [
            Row(f"Service req/s, {where}, kept alive (wrk, 2x{WRK_CONNECTIONS} conns)", kept, "req/s"),
            Row(f"Service req/s, {where}, new connection per request", new, "req/s"),
            Row(f"reconnect cost, {where}: kept alive / new per request", kept / new if new else None, "x"),
        ]
    return rows


def all_rows(*, quick: bool = False) -> list[Row]:
    """Every row of this module; ``quick``: the small size only, 200 endpoints, 2 s per wrk run."""
    sizes = (SMALL,) if quick else (SMALL, LARGE)
    return [
        *lifecycle_rows(sizes),
        *sync_rows(200 if quick else 1000),
        *reconnect_rows(2 if quick else 3),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small size only, 200 endpoints, 2 s wrk runs")
    parser.add_argument("--only", choices=("lifecycle", "sync", "reconnect"), help="one part only")
    parser.add_argument("--endpoints", type=int, default=1000, help="endpoints for the sync rows")
    parser.add_argument("--targets", type=int, help="the large size's echo pods (default 1,000)")
    parser.add_argument("--sync-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sync_child:
        dataplane, kernel, count, name = args.sync_child
        print(json.dumps(time_sync_here(dataplane, kernel, int(count), name)))
        return 0
    large = LARGE if args.targets is None else Size(nodes=20, targets=args.targets, sources=20)
    sizes = (SMALL,) if args.quick else (SMALL, large)
    started = time.monotonic()
    if args.only == "lifecycle":
        rows = lifecycle_rows(sizes)
    elif args.only == "sync":
        rows = sync_rows(args.endpoints)
    elif args.only == "reconnect":
        rows = reconnect_rows(2 if args.quick else 3)
    else:
        rows = [*lifecycle_rows(sizes), *sync_rows(args.endpoints), *reconnect_rows(2 if args.quick else 3)]
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"cluster_scale: {time.monotonic() - started:.0f} s on {os.cpu_count()} CPUs, load average {load}")
    print(format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
