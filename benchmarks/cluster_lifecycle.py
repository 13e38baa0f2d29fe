"""How long a netns cluster takes to come up (every echo pod answering) and to go, per dataplane.

For each dataplane this machine can run, in alternating rounds (so drift on a shared machine hits all
alike): ``NetnsProvider().up`` of 2 nodes / 6 echo pods / 2 source pods until ready, then ``down`` until
nothing of it remains; and the same through the command line (``balancebench cluster up`` … ``down``),
which adds the CLI's own start-up. Goal: ready in at most 3 s.

    .venv/bin/python benchmarks/cluster_lifecycle.py            # 5 rounds
    .venv/bin/python benchmarks/cluster_lifecycle.py --rounds 3 --dataplane nftables
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from balancebench.clusters.base import DATAPLANES, ClusterSpec
from balancebench.clusters.netns import NetnsProvider
from balancebench.clusters.netns.provider import check_machine
from balancebench.errors import MissingFeature

GOAL_S = 3.0


def _spec(dataplane: str) -> ClusterSpec:
    name = f"bench{os.getpid()}-{dataplane}"[:32]
    return ClusterSpec(name=name, nodes=2, targets=6, sources=2, dataplane=dataplane)


def library_round(dataplane: str) -> tuple[float, float]:
    """Seconds of ``up`` (attached, until ready) and of ``down``."""
    spec = _spec(dataplane)
    started = time.monotonic()
    cluster = NetnsProvider().up(spec)
    ready = time.monotonic()
    assert len(cluster.status().targets()) == spec.targets
    before_down = time.monotonic()
    cluster.down()
    return ready - started, time.monotonic() - before_down


def cli_round(dataplane: str) -> tuple[float, float]:
    """Seconds of ``balancebench cluster up`` and of ``balancebench cluster down``, wall clock."""
    spec = _spec(dataplane)
    cli = [sys.executable, "-m", "balancebench", "cluster"]
    started = time.monotonic()
    up = [*cli, "up", "--name", spec.name, "--nodes", "2", "--targets", "6", "--sources", "2"]
    subprocess.run([*up, "--dataplane", dataplane], check=True, capture_output=True)
    ready = time.monotonic()
    subprocess.run([*cli, "down", spec.name], check=True, capture_output=True)
    return ready - started, time.monotonic() - ready


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dataplane", action="append", choices=DATAPLANES, help="default: all that run here")
    args = parser.parse_args(argv)

    runnable, skipped = [], []
    for dataplane in args.dataplane or DATAPLANES:
        try:
            check_machine(dataplane)
            runnable.append(dataplane)
        except MissingFeature as exc:
            skipped.append(f"{dataplane}: {exc}")
    if not runnable:
        print("no dataplane can run here:", *skipped, sep="\n  ")
        return 1

    library: dict[str, list[tuple[float, float]]] = {dp: [] for dp in runnable}
    command_line: dict[str, list[tuple[float, float]]] = {dp: [] for dp in runnable}
    for _ in range(args.rounds):
        for dataplane in runnable:
            library[dataplane].append(library_round(dataplane))
            command_line[dataplane].append(cli_round(dataplane))

    print(
        "netns cluster lifecycle: 2 nodes, 6 echo pods, 2 source pods; "
        f"{args.rounds} rounds; {os.cpu_count()} CPUs"
    )
    header = f"{'dataplane':<10} {'how':<8} {'up median':>10} {'up min':>8} {'up max':>8} {'down median':>12}"
    print(f"{header} {'up / 3 s goal':>14}")
    for dataplane in runnable:
        for how, rounds in (("library", library[dataplane]), ("CLI", command_line[dataplane])):
            ups = [up for up, _ in rounds]
            downs = [down for _, down in rounds]
            median = statistics.median(ups)
            print(
                f"{dataplane:<10} {how:<8} {median:>9.2f}s {min(ups):>7.2f}s {max(ups):>7.2f}s "
                f"{statistics.median(downs):>11.2f}s {median / GOAL_S:>14.0%}"
            )
    for line in skipped:
        print(f"skipped {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
