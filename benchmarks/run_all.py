"""`make perf`: one bounded run that prints the harness's performance as a table of ratios.

One embedded (netns) cluster is brought up once (2 nodes, 6 echo pods, 2 source pods; its ``up`` and
``down`` are timed), and from one source pod, one after another for the same number of seconds:

- the bare FastHttpUser and the recording policy user (a Locust master and ``--workers`` worker processes,
  one per core by default, as in ``recording_overhead.py``; records go to the master over Locust's messages);
- ``wrk`` and ``hey`` (Debian packages, installed by scripts/setup.sh; a tool that is missing is a row
  saying so), 10 connections, kept alive and with a new connection per request;
- echo capacity against one Locust process: wrk and the bare FastHttpUser aimed at one echo pod.

Then, from ``cluster_scale``: ``cluster up``/``down`` time and memory at 6 and at 1,000 echo pods (20
nodes), one node's dataplane sync at 1,000 endpoints per dataplane (ipvs on User-Mode Linux nodes when
the host has no IPVS), and the reconnect cost (wrk kept alive / new connection per request) per dataplane
and node kernel. Then, from ``analysis_speed``: the analysis (streamed, a batch of cells at a time) of
synthetic runs of 1 M, 10 M and 100 M records, each in a fresh process (time, peak RSS, render time), and
a 100-cell report opened in headless Chromium until its plots are drawn.

Bounded: every load run stops after ``--seconds``; with the defaults the whole run takes ≤ 10 minutes.

    .venv/bin/python -m benchmarks.run_all                             # make perf
    .venv/bin/python -m benchmarks.run_all --quick                     # small cluster, 1 M and 10 M records
    .venv/bin/python -m benchmarks.run_all --no-load --rows 2000000    # analysis only
    .venv/bin/python -m benchmarks.run_all --only load --workers 1     # load rows, one Locust worker
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import analysis_speed, cluster_scale
from benchmarks.recording_overhead import run_variant
from benchmarks.table import Row, format_rows

CONNECTIONS = 10
PARTS = ("load", "scale", "analysis", "report")
"""The parts of the run, in order: load rows on one cluster, cluster_scale, analysis_speed, the report."""
DEFAULT_ROWS = (1_000_000, 10_000_000, 100_000_000)
GOALS = {
    "recording vs bare": 0.9,
    "recording vs wrk": 0.3,
    "echo vs one Locust": 4.0,
}


def _rate(pattern: str, output: str) -> float | None:
    match = re.search(pattern, output)
    return float(match[1]) if match else None


def tool_rate(
    cluster: object, source: str, tool: str, url: str, *, close: bool, seconds: int
) -> float | None:
    """Requests/s of ``wrk`` or ``hey`` run in ``source``; None when the tool is not installed."""
    if shutil.which(tool) is None:
        return None
    if tool == "wrk":
        argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", url]
        argv += ["-H", "Connection: close"] if close else []
        pattern = r"Requests/sec:\s+([\d.]+)"
    else:
        argv = ["hey", "-c", str(CONNECTIONS), "-z", f"{seconds}s", *(["-disable-keepalive"] * close), url]
        pattern = r"Requests/sec:\s+([\d.]+)"
    run = cluster.exec(source, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # type: ignore[attr-defined]
    out, _ = run.communicate(timeout=seconds + 60)
    text = out.decode(errors="replace")
    rate = _rate(pattern, text)
    if run.returncode != 0 or rate is None:
        raise SystemExit(f"run_all: {tool} failed in {source}: {text[-400:]}")
    if tool == "wrk" and ("Non-2xx" in text or "Socket errors" in text) and not close:
        print(f"run_all: wrk saw errors (kept alive): {text[-300:]}", file=sys.stderr)
    return rate


def load_rows(args: argparse.Namespace, work: Path) -> list[Row]:
    from balancebench.clusters import registry
    from balancebench.clusters.base import ClusterSpec

    spec = ClusterSpec(name=f"perf{os.getpid()}", nodes=2, targets=6, sources=2, dataplane=args.dataplane)
    started = time.monotonic()
    cluster = registry.get("netns").up(spec)
    up_s = time.monotonic() - started
    rows: list[Row] = []
    try:
        status = cluster.status()
        source = status.sources()[0].name
        service = f"http://{status.service.cluster_ip}:{status.service.port}"
        one_pod = f"http://{status.targets()[0].ip}:{status.service.target_port}"

        def launch(argv: list[str], stdout: int | None) -> subprocess.Popen[bytes]:
            out = subprocess.DEVNULL if stdout is None else stdout
            return cluster.exec(source, argv, stdout=out, stderr=subprocess.DEVNULL)

        def locust(variant: str, host: str, workers: int = args.workers) -> float:
            return run_variant(
                launch, host, variant, users=args.users, seconds=args.seconds, work=work, workers=workers
            )

        # Alternating rounds, medians: drift on a shared machine then hits every row alike.
        samples: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            samples.setdefault("bare", []).append(locust("bare FastHttpUser", service))
            samples.setdefault("recording", []).append(locust("policy user + records", service))
            for tool in ("wrk", "hey"):
                for close in (False, True):
                    rate = tool_rate(cluster, source, tool, service + "/", close=close, seconds=args.seconds)
                    if rate is not None:
                        samples.setdefault(f"{tool} {close}", []).append(rate)
            pod_wrk = tool_rate(cluster, source, "wrk", one_pod + "/", close=False, seconds=args.seconds)
            if pod_wrk is not None:
                samples.setdefault("pod wrk", []).append(pod_wrk)
            # Echo capacity is set against what one Locust process sends.
            samples.setdefault("pod locust", []).append(locust("bare FastHttpUser", one_pod, workers=1))
    finally:
        before_down = time.monotonic()
        cluster.down()
        down_s = time.monotonic() - before_down

    def median(key: str) -> float | None:
        return statistics.median(samples[key]) if key in samples else None

    bare, recording = median("bare"), median("recording")
    tools = {(tool, close): median(f"{tool} {close}") for tool in ("wrk", "hey") for close in (False, True)}
    pod_wrk, pod_locust = median("pod wrk"), median("pod locust")
    where = f"{args.dataplane}, Service of 6 pods, from one source pod"
    workers = f"{args.workers} worker{'s' * (args.workers != 1)}"
    rows.append(Row(f"bare FastHttpUser ({args.users} users, {workers}), {where}", bare, "req/s"))
    rows.append(Row("recording policy user + records, same", recording, "req/s"))
    for (tool, close), rate in tools.items():
        mode = "new connection per request" if close else "kept alive"
        note = "" if rate is not None else f"{tool} not installed: scripts/setup.sh"
        rows.append(Row(f"{tool}, {CONNECTIONS} connections, {mode}", rate, "req/s", note))
    rows.append(Row(f"wrk at one echo pod ({CONNECTIONS} connections, kept alive)", pod_wrk, "req/s"))
    rows.append(Row("bare FastHttpUser at one echo pod", pod_locust, "req/s"))
    rows.append(Row("cluster up (2 nodes, 6 echo, 2 source pods, until ready)", up_s, "s"))
    rows.append(Row("cluster down (until nothing remains)", down_s, "s"))

    def ratio(what: str, top: float | None, bottom: float | None, goal: float | None) -> None:
        value = top / bottom if top is not None and bottom else None
        note = f"goal >= {goal:g}" if goal is not None else ""
        rows.append(Row(what, value, "x", note))

    wrk_alive, wrk_close = tools[("wrk", False)], tools[("wrk", True)]
    ratio("recording user / bare FastHttpUser", recording, bare, GOALS["recording vs bare"])
    ratio("recording user / wrk (kept alive)", recording, wrk_alive, GOALS["recording vs wrk"])
    ratio("bare FastHttpUser / wrk (kept alive)", bare, wrk_alive, None)
    ratio("hey / wrk (kept alive)", tools[("hey", False)], wrk_alive, None)
    ratio(f"reconnect cost, {args.dataplane}: wrk kept alive / new per request", wrk_alive, wrk_close, None)
    ratio("echo pod capacity (wrk) / one Locust process", pod_wrk, pod_locust, GOALS["echo vs one Locust"])
    return rows


def machine_line() -> str:
    memory = "?"
    try:
        with open("/proc/meminfo") as meminfo:
            total = next(line for line in meminfo if line.startswith("MemTotal:"))
            memory = f"{int(total.split()[1]) / 2**20:.0f} GB"
    except (OSError, StopIteration):
        pass
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs ({cpu}), {memory} RAM, Linux {platform.release()}, load average {load}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="each load run (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating load rounds (default 2)")
    parser.add_argument("--users", type=int, default=4, help="Locust users over the workers (default 4)")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="Locust worker processes in the source pod (default: one per core; echo capacity is always set "
        "against one process)",
    )
    parser.add_argument("--dataplane", default="nftables", help="the cluster's dataplane (default nftables)")
    parser.add_argument(
        "--rows", type=int, action="append", help="analysis record count (repeatable; default 1M, 10M, 100M)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small cluster only, 200 endpoints, 1M and 10M records"
    )
    parser.add_argument("--no-load", action="store_true", help="skip the cluster parts (analysis only)")
    parser.add_argument("--no-browser", action="store_true", help="skip opening the report in Chromium")
    parser.add_argument(
        "--only",
        choices=PARTS,
        action="append",
        help=f"run only these parts (repeatable; all: {', '.join(PARTS)})",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 60:
        parser.error(f"--seconds must be 1..60, got {args.seconds}")
    if not 1 <= args.workers <= (os.cpu_count() or 1):
        parser.error(f"--workers must be 1..{os.cpu_count()} (this machine's cores), got {args.workers}")
    if not 1 <= args.rounds <= 5:
        parser.error(f"--rounds must be 1..5, got {args.rounds}")
    sizes = list(args.rows or (DEFAULT_ROWS[:2] if args.quick else DEFAULT_ROWS))
    if any(size < 1000 for size in sizes):
        parser.error("--rows must be at least 1000")

    started = time.monotonic()
    before = machine_line()
    rows: list[Row] = []
    parts = set(args.only or PARTS)
    if args.no_load:
        parts -= {"load", "scale"}
    if args.no_browser:
        parts.discard("report")
    with tempfile.TemporaryDirectory(prefix="bb-perf-") as tmp:
        if "load" in parts:
            rows += load_rows(args, Path(tmp))
        if "scale" in parts:
            rows += cluster_scale.all_rows(quick=args.quick)
        if "analysis" in parts:
            rows += analysis_speed.analysis_rows(sizes, Path(tmp))
        if "report" in parts:
            rows += analysis_speed.report_open_rows(workdir=Path(tmp))
    took = time.monotonic() - started

    print(f"make perf: {took:.0f} s on {before}")
    if "load" in parts:
        print(f"load rows: medians of {args.rounds} alternating rounds of {args.seconds} s each")
    print(format_rows(rows))
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
