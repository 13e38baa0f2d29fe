"""`balancebench ui` over plain HTTP: bad start input is one message; another dataplane, another cluster."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from balancebench.clusters import registry
from balancebench.clusters.netns.provider import check_machine
from balancebench.errors import MissingFeature
from balancebench.ui import free_port

SCENARIO = """
name: ui-runs
cluster: {nodes: 1, targets: 3, sources: 1}
dataplanes: [nftables]
load: {users_per_source: 1, duration: 20s, warmup: 0s}
policies: [keepalive]
"""

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def _needs_netns() -> None:
    for dataplane in ("nftables", "iptables"):
        try:
            check_machine(dataplane)
        except MissingFeature as exc:
            pytest.skip(str(exc))


def _post(url: str, form: dict[str, str]) -> dict[str, object]:
    data = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=120) as response:
        return dict(json.load(response))


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return dict(json.load(response))


def test_bad_input_then_a_run_on_another_dataplane(tmp_path: Path) -> None:
    scenario = tmp_path / "ui.yaml"
    scenario.write_text(SCENARIO)
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "balancebench", "ui", str(scenario), "--web-port", str(port),
         "--out", str(tmp_path / "session")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert ui.stderr is not None
        line = ui.stderr.readline()
        match = re.search(r"balancebench ui: (http://\S+)", line)
        assert match, line + ui.stderr.read()
        url = match.group(1)
        base = {"host": "", "users_per_source": "1", "think_time": "0", "max_duration": "3s", "warmup": "0"}

        bad = _post(url + "swarm", {**base, "preset": "custom", "custom_policy": "max-idle=lots"})
        assert bad["success"] is False and "max-idle" in str(bad["message"]), bad
        bad = _post(url + "swarm", {**base, "preset": "keepalive", "service_path": "nowhere"})
        assert bad["success"] is False and "unknown path 'nowhere'" in str(bad["message"]), bad
        bad = _post(url + "swarm", {**base, "preset": "keepalive", "users_per_source": "0"})
        assert (bad["success"], bad["message"]) == (False, "users per source must be at least 1, got 0")

        names_before = {name for name, _ in registry.running_clusters()}
        started = _post(url + "swarm", {**base, "preset": "per-request", "dataplane": "iptables"})
        assert started["success"] is True, started
        names = {name for name, _ in registry.running_clusters()}
        assert [name for name in names if name.endswith("-iptables")] and not [
            name for name in names if name.endswith("-nftables")
        ], (names_before, names)  # the nftables cluster made way for an iptables one

        deadline = time.monotonic() + 90
        while not (data := _get(url + "balance/data"))["runs"]:
            assert time.monotonic() < deadline, data
            time.sleep(1)
        assert data["label"] == "run 1: iptables/per-request" and data["pods_used"] == 3
    finally:
        ui.send_signal(signal.SIGINT)
        ui.wait(timeout=60)
    run = json.loads((tmp_path / "session" / "1-iptables-per-request" / "run.json").read_text())
    assert [cell["dataplane"] for cell in run["cells"]] == ["iptables"]
    summary = json.loads((tmp_path / "session" / "1-iptables-per-request" / "summary.json").read_text())
    cell = summary["cells"][0]
    assert cell["requests"] > 0 and cell["server_requests"] == cell["requests"]
