"""`balancebench ui` input checks: one line and exit code 2 before anything starts; loud beyond loopback."""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from balancebench.scenario import load_scenario
from balancebench.ui import is_loopback, master_argv

SCENARIO = """
name: ui-cli
cluster: {nodes: 1, targets: 2, sources: 1}
load: {users_per_source: 3, think_time: 50ms, duration: 5s, warmup: 1s}
policies: ["okhttp,max-age=1s"]
"""


def _ui(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "balancebench", "ui", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("", False), ("10.1.2.3", False)],
)  # fmt: skip
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_busy_port_is_one_line_exit_2_and_nothing_created(tmp_path: Path) -> None:
    scenario = tmp_path / "ui.yaml"
    scenario.write_text(SCENARIO)
    with socket.create_server(("0.0.0.0", 0)) as busy:
        port = busy.getsockname()[1]
        done = _ui(
            str(scenario), "--web-host", "0.0.0.0", "--web-port", str(port), "--out", str(tmp_path / "s")
        )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("warning: --web-host 0.0.0.0 serves the UI beyond this machine")
    assert lines[1] == (
        f"balancebench: cannot listen on 0.0.0.0:{port} (Address already in use): "
        "pass another --web-port or --web-host"
    )
    assert len(lines) == 2 and not (tmp_path / "s").exists()


def test_a_bad_scenario_is_one_line_exit_2(tmp_path: Path) -> None:
    scenario = tmp_path / "ui.yaml"
    scenario.write_text("name: x\npolicies: [nope]\n")
    done = _ui(str(scenario), "--out", str(tmp_path / "s"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "nope" in done.stderr, done.stderr
    assert not (tmp_path / "s").exists()


def test_the_start_form_defaults_come_from_the_scenario(tmp_path: Path) -> None:
    path = tmp_path / "ui.yaml"
    path.write_text(SCENARIO)
    argv = master_argv(
        load_scenario(path), scenario_file=path, session_dir=tmp_path, web_host="127.0.0.1", web_port=8089,
        master_port=5000,
    )  # fmt: skip
    options = dict(itertools.pairwise(argv))
    assert options["--web-host"] == "127.0.0.1" and options["--master-bind-host"] == "127.0.0.1"
    assert options["--preset"] == "custom" and options["--custom-policy"] == "okhttp,max-age=1s"
    assert options["--users-per-source"] == "3" and options["--think-time"] == "0.05s"
    assert options["--expect-workers"] == "1" and options["--dataplane"] == "nftables"
    assert options["--service-path"] == "clusterip"
