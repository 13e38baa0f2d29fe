"""Requests per second through the Service on User-Mode Linux nodes against host-kernel nodes, same cell.

A dataplane both kernels run (``iptables``: nft backend on the host, legacy in UML), 2 nodes / 6 echo pods
/ 2 source pods; in each source pod ``wrk`` (a fixed number of connections, for a fixed time) loads the
ClusterIP, once keeping connections alive and once with a new connection per request (``Connection:
close``), in alternating rounds so drift on a shared machine hits both kernels alike. Also the ipvs (rr)
cell on UML nodes, the one the seed measures. Goal: UML nodes carry at least 50 % of what host nodes do.

    .venv/bin/python -m benchmarks.node_kernel_throughput            # 3 rounds of 5 s
    .venv/bin/python -m benchmarks.node_kernel_throughput --rounds 1 --seconds 3
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys

from balancebench.clusters.base import ClusterSpec
from balancebench.clusters.netns import NetnsCluster, NetnsProvider
from balancebench.clusters.netns.provider import check_machine
from balancebench.errors import MissingFeature

GOAL = 0.5
CONNECTIONS = 10
MODES = {"kept alive": [], "new per request": ["-H", "Connection: close"]}


def _requests_per_second(cluster: NetnsCluster, mode: list[str], seconds: int) -> float:
    """Both source pods run wrk at once; their rates add up."""
    url = f"http://{cluster.status().service.cluster_ip}/"
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", *mode, url]
    runs = [cluster.exec(source, argv, stdout=subprocess.PIPE) for source in ("source-0", "source-1")]
    total = 0.0
    for run in runs:
        out, _ = run.communicate(timeout=seconds + 30)
        match = re.search(r"Requests/sec:\s+([\d.]+)", out.decode())
        if run.returncode != 0 or match is None:
            raise SystemExit(f"wrk failed in a source pod: {out.decode()[-300:]}")
        total += float(match[1])
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: run scripts/setup.sh")
        return 1
    cells = [("iptables", "host"), ("iptables", "uml"), ("ipvs", "uml")]
    runnable = []
    for dataplane, kernel in cells:
        try:
            check_machine(dataplane, kernel)
            runnable.append((dataplane, kernel))
        except MissingFeature as exc:
            print(f"skipped {dataplane} on {kernel} nodes: {exc}")
    if ("iptables", "host") not in runnable or ("iptables", "uml") not in runnable:
        print("the comparison needs iptables on both host and UML nodes")
        return 1

    rates: dict[tuple[str, str, str], list[float]] = {}
    clusters = {}
    try:
        for dataplane, kernel in runnable:
            name = f"tput{os.getpid()}-{dataplane}-{kernel}"
            spec = ClusterSpec(
                name=name, nodes=2, targets=6, sources=2, dataplane=dataplane, node_kernel=kernel
            )
            clusters[(dataplane, kernel)] = NetnsProvider().up(spec)
        for _ in range(args.rounds):
            for (dataplane, kernel), cluster in clusters.items():
                for mode, flags in MODES.items():
                    rate = _requests_per_second(cluster, flags, args.seconds)
                    rates.setdefault((dataplane, kernel, mode), []).append(rate)
    finally:
        for cluster in clusters.values():
            cluster.down()

    print(
        f"Service throughput, 2 nodes / 6 echo pods, wrk {CONNECTIONS} connections in each of 2 source pods; "
        f"{args.rounds} rounds of {args.seconds} s; {os.cpu_count()} CPUs"
    )
    print(
        f"{'dataplane':<10} {'kernel':<7} {'connections':<16} {'req/s median':>13} {'vs host':>8} {'goal':>5}"
    )
    for dataplane, kernel in runnable:
        for mode in MODES:
            median = statistics.median(rates[(dataplane, kernel, mode)])
            host = statistics.median(rates[("iptables", "host", mode)])
            ratio = f"{median / host:>8.0%}" if kernel == "uml" else f"{'':>8}"
            goal = f"{GOAL:>5.0%}" if kernel == "uml" else ""
            print(f"{dataplane:<10} {kernel:<7} {mode:<16} {median:>13,.0f} {ratio} {goal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
