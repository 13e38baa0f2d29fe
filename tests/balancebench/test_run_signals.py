"""SIGINT, SIGTERM or SIGKILL of `balancebench run` in any phase leaves nothing of the run behind.

Phases: cluster up (the sandbox exists, pods starting), load (a cell is measuring), between cells (one cell
recorded, a scenario with events brings the next cell a fresh cluster), analysis (every cell recorded, the
report being written). Afterwards: no cluster of the run holds its name, no process carries its label (pods,
Locust, UML kernels alike), no cgroup, lock or socket of it remains; its namespaces and links lived only
inside the sandbox and went with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from balancebench.clusters.netns import runtime

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("needs_nftables_cluster")]

SCENARIO = """
name: signals
cluster: {nodes: 2, targets: 2, sources: 1}
load: {users_per_source: 1, duration: 3s, warmup: 0.5s}
policies: [keepalive, per-request]
events:
  - {at: 1s, scale: 3}
"""

PHASES = ("cluster up", "load", "between cells", "analysis")
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


def _cells(out: Path) -> int:
    try:
        return len(json.loads((out / "run.json").read_text())["cells"])
    except (OSError, ValueError, KeyError):
        return 0


def _reached(phase: str, out: Path, cluster: str) -> bool:
    if phase == "cluster up":
        return runtime.is_running(cluster) and not (out / "records").exists()
    if phase == "load":
        return (out / "records").is_dir() and any((out / "records").glob("*.parquet"))
    if phase == "between cells":
        return _cells(out) == 1
    return _cells(out) == 2 and not (out / "summary.json").exists()


def _leftovers(cluster: str) -> list[str]:
    left = []
    if runtime.is_running(cluster):
        left.append("name lock held")
    for path in (runtime.lock_path(cluster), runtime.socket_path(cluster)):
        if path.exists():
            left.append(str(path))
    cgroup = runtime.cluster_cgroup(cluster)
    if cgroup is not None and cgroup.exists():
        left.append(str(cgroup))
    label = f"{runtime.LABEL}={cluster}".encode()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if label in Path(entry.path, "environ").read_bytes().split(b"\0"):
                    left.append(f"process {entry.name}")
            except OSError:
                continue
    return left


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_in_any_phase_leaves_nothing(tmp_path: Path, phase: str, signum: int) -> None:
    scenario = tmp_path / "signals.yaml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "run"
    run = subprocess.Popen(
        [sys.executable, "-m", "balancebench", "run", str(scenario), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    cluster = f"bb{run.pid}-nftables"
    deadline = time.monotonic() + 120
    while not _reached(phase, out, cluster):
        if run.poll() is not None:
            pytest.fail(f"the run ended before phase {phase!r}: {run.communicate()[1][-400:]}")
        assert time.monotonic() < deadline, f"phase {phase!r} never came"
        time.sleep(0.02)
    run.send_signal(signum)
    _, stderr = run.communicate(timeout=60)
    # (A Ctrl-C while a cluster is being torn down lets the teardown finish, so a run may go on to the end.)
    assert "Traceback" not in stderr
    deadline = time.monotonic() + 30
    while (left := _leftovers(cluster)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []
