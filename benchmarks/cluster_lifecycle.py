"""How long a netns cluster takes to come up (every echo pod answering) and to go, per dataplane.

For each dataplane this machine can run, on the node kernel ``auto`` gives it (ipvs on User-Mode Linux
nodes where the host has no IPVS), in alternating rounds (so drift on a shared machine hits all alike):
``NetnsProvider().up`` of 2 nodes / 6 echo pods / 2 source pods until ready, then ``down`` until nothing
of it remains; and the same through the command line (``balancebench cluster up`` … ``down``), which adds
the CLI's own start-up. Goal: ready in at most 3 s on host nodes, 8 s on UML nodes (each boots a kernel).

    .venv/bin/python -m benchmarks.cluster_lifecycle            # 5 rounds
    .venv/bin/python -m benchmarks.cluster_lifecycle --rounds 3 --dataplane nftables
    .venv/bin/python -m benchmarks.cluster_lifecycle --dataplane iptables --node-kernel uml
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from balancebench.clusters.base import DATAPLANES, NODE_KERNELS, ClusterSpec
from balancebench.clusters.netns import NetnsProvider
from balancebench.clusters.netns.provider import check_machine
from balancebench.errors import MissingFeature

GOAL_S = {"host": 3.0, "uml": 8.0}


def _spec(dataplane: str, kernel: str) -> ClusterSpec:
    name = f"bench{os.getpid()}-{dataplane}-{kernel}"[:32]
    return ClusterSpec(name=name, nodes=2, targets=6, sources=2, dataplane=dataplane, node_kernel=kernel)


def library_round(dataplane: str, kernel: str) -> tuple[float, float]:
    """Seconds of ``up`` (attached, until ready) and of ``down``."""
    spec = _spec(dataplane, kernel)
    started = time.monotonic()
    cluster = NetnsProvider().up(spec)
    ready = time.monotonic()
    assert len(cluster.status().targets()) == spec.targets
    before_down = time.monotonic()
    cluster.down()
    return ready - started, time.monotonic() - before_down


def cli_round(dataplane: str, kernel: str) -> tuple[float, float]:
    """Seconds of ``balancebench cluster up`` and of ``balancebench cluster down``, wall clock."""
    spec = _spec(dataplane, kernel)
    cli = [sys.executable, "-m", "balancebench", "cluster"]
    started = time.monotonic()
    up = [*cli, "up", "--name", spec.name, "--nodes", "2", "--targets", "6", "--sources", "2"]
    subprocess.run([*up, "--dataplane", dataplane, "--node-kernel", kernel], check=True, capture_output=True)
    ready = time.monotonic()
    subprocess.run([*cli, "down", spec.name], check=True, capture_output=True)
    return ready - started, time.monotonic() - ready


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dataplane", action="append", choices=DATAPLANES, help="default: all that run here")
    parser.add_argument("--node-kernel", choices=NODE_KERNELS, default="auto")
    args = parser.parse_args(argv)

    runnable: list[tuple[str, str]] = []
    skipped = []
    for dataplane in args.dataplane or DATAPLANES:
        try:
            runnable.append((dataplane, check_machine(dataplane, args.node_kernel)))
        except MissingFeature as exc:
            skipped.append(f"{dataplane}: {exc}")
    if not runnable:
        print("no dataplane can run here:", *skipped, sep="\n  ")
        return 1

    library: dict[tuple[str, str], list[tuple[float, float]]] = {cell: [] for cell in runnable}
    command_line: dict[tuple[str, str], list[tuple[float, float]]] = {cell: [] for cell in runnable}
    for _ in range(args.rounds):
        for cell in runnable:
            library[cell].append(library_round(*cell))
            command_line[cell].append(cli_round(*cell))

    print(
        "netns cluster lifecycle: 2 nodes, 6 echo pods, 2 source pods; "
        f"{args.rounds} rounds; {os.cpu_count()} CPUs"
    )
    header = f"{'dataplane':<10} {'kernel':<7} {'how':<8} {'up median':>10} {'up min':>8} {'up max':>8}"
    print(f"{header} {'down median':>12} {'goal':>5} {'up / goal':>10}")
    for cell in runnable:
        dataplane, kernel = cell
        for how, rounds in (("library", library[cell]), ("CLI", command_line[cell])):
            ups = [up for up, _ in rounds]
            downs = [down for _, down in rounds]
            median = statistics.median(ups)
            print(
                f"{dataplane:<10} {kernel:<7} {how:<8} {median:>9.2f}s {min(ups):>7.2f}s {max(ups):>7.2f}s "
                f"{statistics.median(downs):>11.2f}s {GOAL_S[kernel]:>4.0f}s {median / GOAL_S[kernel]:>10.0%}"
            )
    for line in skipped:
        print(f"skipped {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
