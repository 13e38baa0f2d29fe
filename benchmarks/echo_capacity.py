"""Is the echo server ever the bottleneck? Its capacity vs what one Locust FastHttpUser process drives.

One echo process serves a fixed keep-alive load from a separate driver process (wrk when installed, else a
multi-connection asyncio client); then one Locust process (10 FastHttpUsers, no wait) drives the same
server. With 2+ cores the echo server is pinned to one core and each driver to another, so each side has
one core, as in a pod. The table gives both rates (the driver's own count and the server's /metrics count)
and the ratio; the goal is ≥ 4×. Also: start-up time to the listening line, alone and 6 in parallel (the
embedded cluster must have its echo pods ready in ≤ 3 s). Loopback only, bounded: about 50 s.

    .venv/bin/python -m benchmarks.echo_capacity
    .venv/bin/python -m benchmarks.echo_capacity --seconds 5 --connections 10 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from workloads.echo.process import EchoProcess

GOAL = 4.0

LOCUSTFILE = """
from locust import FastHttpUser, constant, task


class EchoUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def echo(self):
        self.client.get("/")
"""


def cores() -> tuple[set[int], set[int]] | None:
    """(server core, driver core) when there are two cores to split, else None (no pinning)."""
    available = sorted(os.sched_getaffinity(0))
    return ({available[0]}, {available[1]}) if len(available) >= 2 else None


def pinned(argv: list[str], core: set[int] | None) -> list[str]:
    if core is None or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", ",".join(map(str, sorted(core))), *argv]


def served(echo: EchoProcess) -> float:
    """Echo requests answered so far, from the server's own /metrics."""
    with urllib.request.urlopen(echo.admin_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(value) for value in re.findall(r"^echo_requests_total\{[^}]*\} (\S+)$", text, re.M))


def drive_with_wrk(url: str, *, connections: int, seconds: int, core: set[int] | None) -> float:
    argv = pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url], core)
    output = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    if "Non-2xx" in output or "Socket errors" in output:
        raise SystemExit(f"echo_capacity: wrk saw errors:\n{output}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if match is None:
        raise SystemExit(f"echo_capacity: no Requests/sec in wrk's output:\n{output}")
    return float(match[1])


async def _asyncio_driver(host: str, port: int, connections: int, seconds: float) -> int:
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    deadline = time.monotonic() + seconds
    done = 0

    async def one() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(host, port)
        while time.monotonic() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head)[1])  # type: ignore[index]
            await reader.readexactly(length)
            done += 1
        writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return done


def drive_with_asyncio(url: str, *, connections: int, seconds: int, core: set[int] | None) -> float:
    """Fallback driver (no wrk): a Python client, so the figure is a lower bound of the server's capacity."""
    argv = [
        sys.executable,
        __file__,
        "--drive",
        url,
        "--seconds",
        str(seconds),
        "--connections",
        str(connections),
    ]
    output = subprocess.run(
        pinned(argv, core), capture_output=True, text=True, timeout=seconds + 30, check=True
    )
    return float(output.stdout)


def drive_with_locust(url: str, *, users: int, seconds: int, core: set[int] | None, work: Path) -> float:
    """Requests/s of one Locust process, from Locust's own stats (requests over first-to-last request)."""
    locustfile = work / "locustfile.py"
    locustfile.write_text(LOCUSTFILE)
    stats = work / "locust-stats"  # Locust appends ".json"
    argv = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "--only-summary"]
    argv += [
        "--skip-log-setup",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{seconds}s",
        "-H",
        url.rstrip("/"),
    ]
    argv += ["--json-file", str(stats)]
    subprocess.run(pinned(argv, core), capture_output=True, timeout=seconds + 60, check=True)
    entries = json.loads(stats.with_name(stats.name + ".json").read_text())
    total = sum(entry["num_requests"] for entry in entries)
    failures = sum(entry["num_failures"] for entry in entries)
    if failures:
        raise SystemExit(f"echo_capacity: Locust saw {failures} failures")
    start = min(entry["start_time"] for entry in entries)
    last = max(entry["last_request_timestamp"] for entry in entries)
    return total / (last - start)


def start_up_seconds(count: int) -> float:
    """Wall time from launching ``count`` echo servers at once to the last one's listening line."""
    echoes = [EchoProcess() for _ in range(count)]
    started = time.monotonic()
    threads = [threading.Thread(target=echo.start) for echo in echoes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.monotonic() - started
    for echo in echoes:
        if echo.listening is None:
            raise SystemExit(f"echo_capacity: an echo server did not start: {echo.stderr_text()}")
        echo.__exit__(None, None, None)
    return took


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="each capacity run (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    parser.add_argument(
        "--connections", type=int, nargs="+", default=[10, 50], help="keep-alive connections (default 10 50)"
    )
    parser.add_argument("--locust-seconds", type=int, default=10, help="the Locust run (default 10)")
    parser.add_argument(
        "--users", type=int, default=10, help="FastHttpUsers in the Locust process (default 10)"
    )
    parser.add_argument("--drive", metavar="URL", help=argparse.SUPPRESS)  # the fallback driver's own process
    args = parser.parse_args(argv)
    if args.drive:
        host, port = re.match(r"http://([^:/]+):(\d+)/", args.drive).groups()  # type: ignore[union-attr]
        started = time.monotonic()
        done = asyncio.run(_asyncio_driver(host, int(port), args.connections[0], args.seconds))
        print(done / (time.monotonic() - started))
        return 0

    split = cores()
    server_core, driver_core = split if split else (None, None)
    driver = "wrk" if shutil.which("wrk") else "asyncio client (wrk not installed: a lower bound)"
    drive = drive_with_wrk if shutil.which("wrk") else drive_with_asyncio

    alone = start_up_seconds(1)
    six = start_up_seconds(6)

    load_before = os.getloadavg()[0]
    names = [f"echo, {driver}, {n} keep-alive connections" for n in args.connections]
    locust_name = f"one Locust process, {args.users} FastHttpUsers"
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in [*names, locust_name]}
    with EchoProcess() as echo, tempfile.TemporaryDirectory(prefix="echo-capacity-") as work:
        if server_core is not None:
            os.sched_setaffinity(echo.pid, server_core)
        # alternating rounds: other tenants of a shared machine then hit every row alike
        for _round in range(args.rounds):
            for name, connections in zip(names, args.connections, strict=True):
                before, started = served(echo), time.monotonic()
                rate = drive(echo.url, connections=connections, seconds=args.seconds, core=driver_core)
                rounds[name].append((rate, (served(echo) - before) / (time.monotonic() - started)))
            before, started = served(echo), time.monotonic()
            rate = drive_with_locust(
                echo.url, users=args.users, seconds=args.locust_seconds, core=driver_core, work=Path(work)
            )
            rounds[locust_name].append((rate, (served(echo) - before) / (time.monotonic() - started)))

    best = {name: max(runs) for name, runs in rounds.items()}
    capacity = min(best[name][0] for name in names)
    ratio = capacity / best[locust_name][0]
    pinning = f"server on CPU {server_core}, drivers on CPU {driver_core}" if split else "no pinning (1 core)"
    print(f"echo capacity on {os.cpu_count()} cores, loopback, {pinning}, load average {load_before:.1f}")
    print(f"best of {args.rounds} alternating rounds (each round's driver req/s in brackets)")
    print()
    print(f"{'load':<58} {'req/s (driver)':>15} {'req/s (server)':>15}  rounds")
    for name, (rate, server_rate) in best.items():
        each = ", ".join(f"{run:,.0f}" for run, _ in rounds[name])
        print(f"{name:<58} {rate:>15,.0f} {server_rate:>15,.0f}  [{each}]")
    print()
    print(
        f"{'ratio: echo capacity (lowest row) / one Locust process':<58} {ratio:>14.1f}x  goal ≥ {GOAL:.0f}x"
    )
    print(f"{'start-up to listening line, 1 server':<58} {alone:>14.2f}s")
    print(f"{'start-up to listening line, 6 servers at once':<58} {six:>14.2f}s  goal ≤ 3 s")
    print(
        "(server req/s count over the driver's whole process life, ramp-up included, so read a little lower)"
    )
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
