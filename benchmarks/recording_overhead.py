"""What recording costs: requests/s of the policy-enforcing user with full recording vs a bare FastHttpUser.

Both run as a Locust master and one worker in the same source pod against the same Service of the same
cluster (the recording worker sends its records to the master over Locust's messages), in alternating
rounds (so drift on a shared machine hits both alike); the table shows the median of each and the ratio.
Goal: the recording policy user keeps at least 90 % of the bare FastHttpUser's throughput.

    .venv/bin/python -m benchmarks.recording_overhead                 # netns cluster (root), nftables
    .venv/bin/python -m benchmarks.recording_overhead --loopback      # one echo server on loopback
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from balancebench.loadrun import LOCUSTFILE
from loadtests.collect import read_frames

BARE_LOCUSTFILE = '''
from locust import FastHttpUser, task


class BareFastHttpUser(FastHttpUser):
    """Locust's own fast client: one kept-alive pool per user, nothing recorded beyond Locust's stats."""

    @task
    def get(self):
        self.client.get("/")
'''

Exec = Callable[[list[str], int | None], "subprocess.Popen[bytes]"]
"""Start a program in the source pod (or on loopback), its stdout to the given fd (None: discarded)."""

_ports = itertools.count(5600)


def run_variant(
    launch: Exec, host: str, variant: str, *, users: int, seconds: int, work: Path, workers: int = 1
) -> float:
    """Requests/s of one distributed Locust run of ``variant`` (a master and ``workers`` workers in the same
    pod, ``users`` users over them), from the master's own request stats. With records, the workers send
    them to the master over Locust's messages and the master streams them to its stdout
    (``--records-dir -``), as in ``balancebench run``."""
    stats = work / f"stats-{time.monotonic_ns()}"  # Locust appends ".json"
    port = str(next(_ports))
    common = [sys.executable, "-m", "locust", "--headless", "--only-summary", "--skip-log-setup", "-H", host]
    master = [*common, "--master", "--expect-workers", str(workers), "--master-bind-port", port]
    master += ["-u", str(users), "-r", str(users * 10), "--json-file", str(stats)]
    worker = [*common, "--worker", "--master-host", "127.0.0.1", "--master-port", port]
    if variant == "bare FastHttpUser":
        bare = work / "bare_locustfile.py"
        bare.write_text(BARE_LOCUSTFILE)
        master += ["-f", str(bare), "-t", f"{seconds}s"]
        worker += ["-f", str(bare)]
    else:
        options = ["-f", str(LOCUSTFILE), "--policy", "keepalive", "--cell", "overhead"]
        options += ["--duration", f"{seconds}s", "--warmup", "0"]
        if variant == "policy user + records":
            options += ["--records-dir", "-"]
        master += [*options, "-t", f"{seconds + 60}s"]  # the master ends the run at --duration itself
        worker += options
    stream = (work / f"records-{port}.stream").open("wb")
    processes = [launch(master, stream.fileno()), *(launch(worker, None) for _ in range(workers))]
    try:
        for process in processes:
            process.wait(timeout=seconds + 90)
    finally:
        stream.close()
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    if any(process.returncode != 0 for process in processes):
        codes = [process.returncode for process in processes]
        raise SystemExit(f"recording_overhead: locust ({variant}) exited with {codes}")
    entries = json.loads(stats.with_name(stats.name + ".json").read_text())
    total = sum(e["num_requests"] for e in entries)
    start = min(e["start_time"] for e in entries)
    last = max(e["last_request_timestamp"] for e in entries)
    return total / (last - start)


def recorded_rows(work: Path) -> tuple[int, int]:
    """Rows and batches that reached the masters' stdout streams (what ``balancebench run`` would write)."""
    rows = batches = 0

    def count(table: pa.Table) -> None:
        nonlocal rows, batches
        rows += table.num_rows
        batches += 1

    for path in sorted(work.glob("records-*.stream")):
        with path.open("rb") as lines:
            read_frames(lines, on_table=count, on_end=lambda summary: None, on_other=lambda line: None)
    return rows, batches


@contextmanager
def loopback_target() -> Iterator[tuple[Exec, str, str]]:
    from workloads.echo.process import EchoProcess

    with EchoProcess(env={"POD_NAME": "echo-0", "NODE_NAME": "local"}) as echo:

        def launch(argv: list[str], stdout: int | None) -> subprocess.Popen[bytes]:
            out = subprocess.DEVNULL if stdout is None else stdout
            return subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL)

        yield launch, f"http://{echo.host}:{echo.port}", "loopback, 1 echo server"


@contextmanager
def netns_target(dataplane: str) -> Iterator[tuple[Exec, str, str]]:
    from balancebench.clusters import registry
    from balancebench.clusters.base import ClusterSpec

    spec = ClusterSpec(name="bb-overhead", nodes=2, targets=6, sources=2, dataplane=dataplane)
    with registry.get("netns").up(spec) as cluster:
        status = cluster.status()
        source = status.sources()[0].name

        def launch(argv: list[str], stdout: int | None) -> subprocess.Popen[bytes]:
            out = subprocess.DEVNULL if stdout is None else stdout
            return cluster.exec(source, argv, stdout=out, stderr=subprocess.DEVNULL)

        host = f"http://{status.service.cluster_ip}:{status.service.port}"
        yield launch, host, f"netns cluster, {dataplane}, 2 nodes, 6 echo pods"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loopback", action="store_true", help="one echo server on loopback, no cluster")
    parser.add_argument("--dataplane", default="nftables", help="netns cluster dataplane (default nftables)")
    parser.add_argument("--users", type=int, default=4, help="Locust users in the one process (default 4)")
    parser.add_argument("--seconds", type=int, default=8, help="run time of each round (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per variant (default 3)")
    parser.add_argument("--workers", type=int, default=1, help="Locust workers beside the master (default 1)")
    args = parser.parse_args(argv)

    variants = ["bare FastHttpUser", "policy user + records", "policy user, no records"]
    rates: dict[str, list[float]] = {v: [] for v in variants}
    target = loopback_target() if args.loopback else netns_target(args.dataplane)
    with tempfile.TemporaryDirectory(prefix="bb-overhead-") as tmp, target as (launch, host, where):
        work = Path(tmp)
        for _ in range(args.rounds):
            for variant in variants:
                rates[variant].append(
                    run_variant(
                        launch,
                        host,
                        variant,
                        users=args.users,
                        seconds=args.seconds,
                        work=work,
                        workers=args.workers,
                    )
                )
        recorded, batches = recorded_rows(work)

    base = statistics.median(rates[variants[0]])
    print(
        f"recording overhead: {where}; {args.users} users over {args.workers} worker(s), "
        f"{args.rounds} x {args.seconds}s rounds each"
    )
    print(f"{'variant':<26} {'median req/s':>12} {'rounds':>30} {'vs bare':>8}")
    for variant in variants:
        median = statistics.median(rates[variant])
        rounds = " ".join(f"{r:,.0f}" for r in rates[variant])
        print(f"{variant:<26} {median:>12,.0f} {rounds:>30} {median / base:>8.1%}")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"records over Locust's messages: {recorded:,} rows in {batches} batches")
    print(f"load average {load} on {os.cpu_count()} CPUs")
    print("goal: policy user + records >= 90% of bare FastHttpUser")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
