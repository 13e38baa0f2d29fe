"""`balancebench run` end to end on the embedded cluster: summary.json contract, totals, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.balancebench.cli import start_balancebench

pytestmark = pytest.mark.usefixtures("needs_nftables_cluster")

SCENARIO = """
name: tiny
cluster: {nodes: 2, targets: 4, sources: 2}
dataplanes: [nftables]
load: {users_per_source: 1, duration: 3s, warmup: 0.5s}
policies: [keepalive, per-request]
seed: 7
"""


def test_run_writes_the_summary_contract_with_exact_totals(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "run"
    done = start_balancebench("run", str(scenario), "--out", str(out))
    stdout, stderr = done.communicate(timeout=180)
    assert done.returncode == 0, stderr

    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema"] == 2
    cells = {cell["cell"]: cell for cell in summary["cells"]}
    assert set(cells) == {"nftables/keepalive", "nftables/per-request"}
    for cell in cells.values():
        for key in ("dataplane", "policy", "path", "requests", "errors", "server_requests", "pods",
                    "balance", "latency_ms", "connections"):  # fmt: skip
            assert key in cell, key
        assert set(cell["balance"]) >= {"jain", "max_mean", "cov", "chi2_p"}
        assert set(cell["latency_ms"]) >= {"p50", "p90", "p99", "p999"}
        assert cell["errors"] == 0
        # The servers count warm-up requests too; the records hold every one of them.
        assert cell["server_requests"] == cell["requests"] + cell["warmup_excluded"]
        assert len(cell["pods"]) == 4
    keepalive, per_request = cells["nftables/keepalive"], cells["nftables/per-request"]
    assert keepalive["pods_used"] <= 2 and keepalive["sockets_used"] == 2
    assert per_request["pods_used"] == 4 and per_request["balance"]["jain"] > keepalive["balance"]["jain"]
    assert keepalive["policy"] == "keepalive" and keepalive["path"] == "clusterip"

    assert (out / "report.html").stat().st_size > 100_000
    assert "keepalive, nftables:" in (out / "summary.md").read_text()
    assert "cells ranked by balance" in stdout
    run = json.loads((out / "run.json").read_text())
    assert [c["cell"] for c in run["cells"]] == ["nftables/keepalive", "nftables/per-request"]


def test_ctrl_c_keeps_what_was_measured_and_leaves_nothing(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.yaml"
    # A short first cell, then a long one that Ctrl-C cuts short.
    scenario.write_text(
        SCENARIO.replace(
            "policies: [keepalive, per-request]",
            "policies: [keepalive, {policy: per-request, load: {duration: 60s}}]",
        )
    )
    out = tmp_path / "run"
    done = start_balancebench("run", str(scenario), "--out", str(out))
    deadline = time.monotonic() + 90
    while (
        len(json.loads((out / "run.json").read_text()).get("cells", [])) < 1
        if (out / "run.json").exists()
        else True
    ):
        assert done.poll() is None and time.monotonic() < deadline, done.communicate()[1]
        time.sleep(0.2)
    first_cell_parts = len(list((out / "records").glob("*.parquet")))
    while len(list((out / "records").glob("*.parquet"))) <= first_cell_parts:  # the second cell is measuring
        assert done.poll() is None and time.monotonic() < deadline, done.communicate()[1]
        time.sleep(0.2)
    done.send_signal(signal.SIGINT)
    _, stderr = done.communicate(timeout=60)
    assert done.returncode == 130
    lines = stderr.strip().splitlines()
    assert lines[-1] == "balancebench: interrupted"
    assert "Traceback" not in stderr
    # The finished cell and what the cut one measured are reported; run.json says which was cut short.
    assert any(
        line.startswith("report of the 1 finished cell and the cut-short nftables/per-request:")
        for line in lines
    ), stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [c["cell"] for c in summary["cells"]] == ["nftables/keepalive", "nftables/per-request"]
    run = json.loads((out / "run.json").read_text())
    assert [c.get("complete") for c in run["cells"]] == [True, False]
    assert len(list((out / "records").glob("*.parquet"))) > first_cell_parts
    # The run's cluster went with it (the session guard in tests/conftest.py checks every trace too).
    label = f"BALANCEBENCH_CLUSTER=bb{done.pid}-".encode()  # this run's clusters, not other sessions'
    lingering = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _has_label(p, os.getpid(), label)]
    assert lingering == []


def _finished_cells(run_dir: Path) -> int:
    try:
        return len(json.loads((run_dir / "run.json").read_text())["cells"])
    except (OSError, ValueError, KeyError):
        return 0


def _has_label(proc: Path, own_pid: int, label: bytes = b"BALANCEBENCH_CLUSTER=bb") -> bool:
    if int(proc.name) == own_pid:
        return False
    try:
        return label in (proc / "environ").read_bytes()
    except OSError:
        return False
