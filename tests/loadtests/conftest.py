"""Real echo servers and real Locust runs for the load-generator tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from balancebench.loadrun import LOCUSTFILE
from workloads.echo.process import EchoProcess

LOCUST_TIMEOUT = 90.0
"""Seconds a test's Locust run may take before the test fails (each run stops itself much sooner)."""


def echo_metrics(echo: EchoProcess) -> dict[str, float]:
    """The echo server's counters, summed over label sets, by sample name."""
    text = requests.get(f"{echo.admin_url}/metrics", timeout=10).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


@dataclass(frozen=True)
class LocustRun:
    """A finished local Locust run: its records and what the echo server counted meanwhile."""

    rows: list[dict[str, Any]]
    server_requests: int
    server_connections: int
    output: str

    def client_connections(self) -> int:
        return len({(r["source_pod"], r["client_conn"]) for r in self.rows})

    def server_connections_seen(self) -> int:
        return len({(r["target_pod"], r["server_conn"]) for r in self.rows if r["server_conn"] >= 0})

    def requests_per_connection(self) -> list[int]:
        counts: dict[int, int] = {}
        for r in self.rows:
            counts[r["client_conn"]] = counts.get(r["client_conn"], 0) + 1
        return sorted(counts.values(), reverse=True)


def run_locust(
    echo: EchoProcess,
    records_dir: Path,
    *,
    policy: str,
    users: int = 1,
    args: Sequence[str] = (),
    locustfile: Path = LOCUSTFILE,
) -> LocustRun:
    """One headless local Locust run of the balancebench locustfile against ``echo``; bounded by its args."""
    before = echo_metrics(echo)
    argv = [
        sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "--only-summary",
        "-u", str(users), "-r", str(users * 100), "-t", "60s", "-s", "10s", "--exit-code-on-error", "0",
        "-H", f"http://{echo.host}:{echo.port}", "--policy", policy, "--cell", "test",
        "--records-dir", str(records_dir), *args,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=LOCUST_TIMEOUT, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    after = echo_metrics(echo)
    rows = pq.read_table(records_dir).to_pylist() if any(records_dir.glob("*.parquet")) else []
    return LocustRun(
        rows=rows,
        server_requests=int(after["echo_requests_total"] - before["echo_requests_total"]),
        server_connections=int(
            after["echo_connections_opened_total"] - before["echo_connections_opened_total"]
        ),
        output=output,
    )


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoProcess]:
    with EchoProcess(env={"POD_NAME": "echo-0", "NODE_NAME": "node-1"}) as server:
        yield server
