"""`make perf`: one bounded run that prints the harness's performance as a table of ratios.

One embedded (netns) cluster is brought up once (2 nodes, 6 echo pods, 2 source pods; its ``up`` and
``down`` are timed), and from one source pod, one after another for the same number of seconds:

- the bare FastHttpUser and the recording policy user (a Locust master and one worker, as in
  ``recording_overhead.py``; records go to the master over Locust's messages);
- ``wrk`` and ``hey`` (Debian packages, installed by scripts/setup.sh; a tool that is missing is a row
  saying so), 10 connections, kept alive and with a new connection per request;
- echo capacity against one Locust process: wrk and the bare FastHttpUser aimed at one echo pod.

Then the analysis on synthetic runs (``analysis.synthetic``, 9 cells as in ``analysis_speed.py``) at each
``--rows`` size, in a fresh process per size: read + metrics time, report render time (``render_html``)
and the child's peak RSS. 100 M records only with ``--big`` (it needs ~12 GB and minutes).

Bounded: a load run stops after ``--seconds``; with the defaults the whole run takes ~3-6 minutes.

    .venv/bin/python benchmarks/run_all.py                            # make perf
    .venv/bin/python benchmarks/run_all.py --seconds 3 --rows 200000  # quicker
    .venv/bin/python benchmarks/run_all.py --big                      # adds 100 M records
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.recording_overhead import run_variant

CONNECTIONS = 10
DEFAULT_ROWS = (1_000_000, 10_000_000)
BIG_ROWS = 100_000_000
GOALS = {
    "recording vs bare": 0.9,
    "recording vs wrk": 0.3,
    "echo vs one Locust": 4.0,
    "analysis seconds at 100 M": 60.0,
    "analysis peak GB at 100 M": 4.0,
}

ANALYSIS_CHILD = """
import json, resource, sys, time
from analysis.loading import read_columns
from analysis.manifest import load_run
from analysis.metrics import compute_run
from analysis.summary import build_summary
from analysis.report import render_html
started = time.perf_counter()
run = load_run(sys.argv[1])
cells = compute_run(run, read_columns(sys.argv[1]))
summary = build_summary(run, cells)
analysed = time.perf_counter()
page = render_html(summary, cells)
rendered = time.perf_counter()
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"analysis_s": analysed - started, "render_s": rendered - analysed, "peak_mb": peak_mb,
                  "html_kb": len(page.encode()) / 1024, "cells": len(cells)}))
"""


@dataclass
class Row:
    what: str
    value: float | None
    unit: str
    note: str = ""


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

        def locust(variant: str, host: str) -> float:
            return run_variant(launch, host, variant, users=args.users, seconds=args.seconds, work=work)

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
            samples.setdefault("pod locust", []).append(locust("bare FastHttpUser", one_pod))
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
    rows.append(Row(f"bare FastHttpUser ({args.users} users), {where}", bare, "req/s"))
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


def analysis_rows(sizes: list[int], work: Path) -> list[Row]:
    from analysis.synthetic import write_synthetic_run

    rows: list[Row] = []
    for size in sizes:
        run_dir = work / f"run-{size}"
        write_synthetic_run(run_dir, rows=size, parts_per_cell=4)
        child = subprocess.run(
            [sys.executable, "-c", ANALYSIS_CHILD, str(run_dir)],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        shutil.rmtree(run_dir)
        if child.returncode != 0:
            rows.append(Row(f"analysis of {size:,} records", None, "s", f"failed: {child.stderr[-200:]}"))
            continue
        result = json.loads(child.stdout.strip().splitlines()[-1])
        big = size >= BIG_ROWS
        rows.append(
            Row(
                f"analysis (read + metrics), {size:,} records, {result['cells']} cells",
                result["analysis_s"],
                "s",
                f"goal <= {GOALS['analysis seconds at 100 M']:g} s" if big else "",
            )
        )
        rows.append(
            Row(
                f"analysis peak RSS, {size:,} records",
                result["peak_mb"] / 1024,
                "GB",
                f"goal <= {GOALS['analysis peak GB at 100 M']:g} GB" if big else "",
            )
        )
        rows.append(
            Row(
                f"report render (render_html, {result['html_kb']:.0f} KB), {size:,} records",
                result["render_s"],
                "s",
            )
        )
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
    parser.add_argument("--users", type=int, default=4, help="Locust users in the worker (default 4)")
    parser.add_argument("--dataplane", default="nftables", help="the cluster's dataplane (default nftables)")
    parser.add_argument(
        "--rows", type=int, action="append", help="analysis record count (repeatable; default 1M and 10M)"
    )
    parser.add_argument("--big", action="store_true", help=f"also analyse {BIG_ROWS:,} records (~12 GB)")
    parser.add_argument("--no-load", action="store_true", help="skip the cluster part (analysis only)")
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 60:
        parser.error(f"--seconds must be 1..60, got {args.seconds}")
    if not 1 <= args.rounds <= 5:
        parser.error(f"--rounds must be 1..5, got {args.rounds}")
    sizes = list(args.rows or DEFAULT_ROWS) + ([BIG_ROWS] if args.big else [])
    if any(size < 1000 for size in sizes):
        parser.error("--rows must be at least 1000")

    started = time.monotonic()
    before = machine_line()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bb-perf-") as tmp:
        if not args.no_load:
            rows += load_rows(args, Path(tmp))
        rows += analysis_rows(sizes, Path(tmp))
    took = time.monotonic() - started

    print(f"make perf: {took:.0f} s on {before}")
    if not args.no_load:
        print(f"load rows: medians of {args.rounds} alternating rounds of {args.seconds} s each")
    width = max(len(row.what) for row in rows)
    for row in rows:
        if row.value is None:
            value = "-"
        elif row.unit == "req/s":
            value = f"{row.value:,.0f} req/s"
        elif row.unit == "x":
            value = f"{row.value:.2f}x"
        else:
            value = f"{row.value:.2f} {row.unit}"
        print(f"{row.what:<{width}}  {value:>14}  {row.note}")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
