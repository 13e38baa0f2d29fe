"""`balancebench ui` end to end in headless Chromium: the Balance tab shows pinned and even spreads.

Bad start input is one message; the second run, on another dataplane, brings up another cluster; Ctrl-C
leaves nothing.

Debian's chromium (installed by scripts/setup.sh) is driven by Playwright with ``executable_path``: no browser
download. Screenshots go to the test's tmp directory, and to ``$BALANCEBENCH_SCREENSHOTS`` when set (that is
how ``docs/ui-balance.png`` is made).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from balancebench.clusters import registry
from balancebench.clusters.netns import runtime
from balancebench.clusters.netns.provider import check_machine
from balancebench.errors import MissingFeature

CHROMIUM = Path("/usr/bin/chromium")
SCENARIO = """
name: ui-e2e
cluster: {nodes: 2, targets: 4, sources: 2}
dataplanes: [nftables]
load: {users_per_source: 1, duration: 20s, warmup: 0s}
policies: [keepalive]
seed: 7
"""

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def _needs_netns() -> None:
    for dataplane in ("nftables", "iptables"):
        try:
            check_machine(dataplane)
        except MissingFeature as exc:
            pytest.skip(str(exc))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_ui(tmp_path: Path, port: int) -> tuple[subprocess.Popen[str], str]:
    scenario = tmp_path / "ui.yaml"
    scenario.write_text(SCENARIO)
    ui = subprocess.Popen(
        [sys.executable, "-m", "balancebench", "ui", str(scenario), "--web-port", str(port),
         "--out", str(tmp_path / "session")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert ui.stderr is not None
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        line = ui.stderr.readline()
        if not line:
            break
        match = re.search(r"balancebench ui: (http://\S+)", line)
        if match:
            return ui, match.group(1)
    ui.kill()
    pytest.fail(f"balancebench ui did not print its URL: {ui.communicate()}")


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def _master(ui: subprocess.Popen[str]) -> int:
    """The Locust master `balancebench ui` started (its one child)."""
    return int(Path(f"/proc/{ui.pid}/task/{ui.pid}/children").read_text().split()[0])


def _post(url: str, form: dict[str, str]) -> dict[str, object]:
    data = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=60) as response:
        return dict(json.load(response))


def _labelled(prefix: str) -> list[str]:
    """Processes whose environment says they belong to a cluster named ``prefix…``."""
    found = []
    marker = f"{runtime.LABEL}={prefix}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if any(item.startswith(marker) for item in environ.split(b"\0")):
            found.append(proc.name)
    return found


def _balance_rows(page) -> dict[str, list[str]]:
    # In one go: React re-renders the table every poll, so row handles go stale.
    table = page.evaluate(
        "() => [...document.querySelectorAll('table tbody tr')]"
        ".map(tr => [...tr.querySelectorAll('td')].map(td => td.innerText.trim()))"
    )
    return {cells[0]: cells for cells in table if cells}


def _wait_rows(page, condition, timeout: float = 30.0) -> dict[str, list[str]]:
    deadline = time.monotonic() + timeout
    rows: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        rows = _balance_rows(page)
        if rows and condition(rows):
            return rows
        page.wait_for_timeout(500)
    pytest.fail(f"the Balance tab never showed what was expected; last rows: {rows}")


def _wait_reports(page, count: int):
    """The panel's report links once ``count`` runs have finished (newest first)."""
    links = page.locator("a.bb-report")
    deadline = time.monotonic() + 60
    while links.count() < count:
        if time.monotonic() > deadline:
            pytest.fail(f"{links.count()} report links after {count} stopped runs")
        page.wait_for_timeout(500)
    return links


def _summary(rows: dict[str, list[str]]) -> list[str]:
    return next(cells for name, cells in rows.items() if name.startswith("all ("))


def _both_sources(rows: dict[str, list[str]]) -> bool:
    """Records from both source pods have arrived (each worker's batches ride on its own reports)."""
    pods = [cells for name, cells in rows.items() if name.startswith("echo-")]
    return all(sum(int(cells[column].replace(",", "")) for cells in pods) > 0 for column in (6, 7))


def _requests(rows: dict[str, list[str]]) -> int:
    return int(_summary(rows)[2].replace(",", ""))


def _start(page, preset: str, dataplane: str = "nftables") -> None:
    page.get_by_text("Custom parameters").click()
    page.select_option("select[name=preset]", preset)
    page.select_option("select[name=dataplane]", dataplane)
    page.fill("input[name=duration]", "20s")
    page.get_by_role("button", name="Start").click()
    page.get_by_role("tab", name="Balance").click()


def _shoot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    extra = os.environ.get("BALANCEBENCH_SCREENSHOTS")
    if extra:
        shutil.copy(tmp_path / name, Path(extra) / name)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (scripts/setup.sh)")
def test_balance_tab_keepalive_then_per_request(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    before = set(registry.running_clusters())
    port = _free_port()
    ui, url = _start_ui(tmp_path, port)
    try:
        # Loopback only by default.
        assert _listening_addresses(port) == {"0100007F"}, _listening_addresses(port)

        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 720})
            page.set_default_timeout(30_000)
            page.goto(url)

            # Bad input, posted as the page posts it: one message, no run.
            bad = _post(url + "swarm", {"preset": "custom", "custom_policy": "max-idle=lots", "host": ""})
            assert bad["success"] is False and "max-idle" in str(bad["message"]), bad
            bad = _post(url + "swarm", {"preset": "keepalive", "users_per_source": "0", "host": ""})
            assert (bad["success"], bad["message"]) == (False, "users per source must be at least 1, got 0")
            bad = _post(url + "swarm", {"preset": "keepalive", "service_path": "nowhere", "host": ""})
            assert bad["success"] is False and "unknown path 'nowhere'" in str(bad["message"]), bad

            _start(page, "keepalive")
            # One user per source pod keeps one connection: at most 2 of the 4 pods get anything.
            rows = _wait_rows(
                page, lambda r: _summary(r)[1] == "run 1, running" and _requests(r) > 300 and _both_sources(r)
            )
            # The panel above the table agrees (it polls on its own, also after a stop).
            page.wait_for_function(
                "() => /^[12] of 4$/.test(document.querySelector('[data-figure=used]')?.textContent || '')"
            )
            _shoot(page, tmp_path, "ui-balance-keepalive.png")
            pods = {name: cells for name, cells in rows.items() if name.startswith("echo-")}
            assert len(pods) == 4
            used = [name for name, cells in pods.items() if int(cells[2].replace(",", "")) > 0]
            assert 1 <= len(used) <= 2, rows
            assert sum(int(cells[5]) for cells in pods.values()) == 2, rows  # two connections in all
            assert _summary(rows)[0] in ("all (1 of 4 used)", "all (2 of 4 used)")
            page.get_by_role("button", name="Stop").click()
            _wait_reports(page, 1)

            page.get_by_role("button", name="New").click()
            # Another dataplane: another cluster in place of the first.
            _start(page, "per-request", dataplane="iptables")
            # Until its first poll the page shows the last rows of run 1: wait for run 2's own.
            rows = _wait_rows(
                page, lambda r: _summary(r)[1] == "run 2, running" and _requests(r) > 300 and _both_sources(r)
            )
            _shoot(page, tmp_path, "ui-balance-per-request.png")
            assert _summary(rows)[0] == "all (4 of 4 used)", rows
            jain = float(_summary(rows)[3].removeprefix("Jain "))
            assert jain > 0.9, rows
            mine = [name for name, _ in registry.running_clusters() if name.startswith(f"bb{_master(ui)}-")]
            assert mine == [f"bb{_master(ui)}-iptables"], mine
            page.get_by_role("button", name="Stop").click()
            links = _wait_reports(page, 2)
            assert "per-request" in links.first.inner_text()
            _shoot(page, tmp_path, "ui-balance.png")

            # The report of the stopped run, rendered from its records and served by the UI.
            with page.context.expect_page() as opened:
                links.first.click()
            report = opened.value
            report.wait_for_load_state()
            assert "iptables/per-request" in report.content()
            _shoot(report, tmp_path, "ui-report.png")
            browser.close()
        master = _master(ui)
    finally:
        ui.send_signal(signal.SIGINT)
        try:
            code = ui.wait(timeout=60)
        except subprocess.TimeoutExpired:
            ui.kill()
            raise
    assert code == 130
    # Nothing left after Ctrl-C: not the master, no cluster, no process of its clusters (pods, tunnels,
    # workers, supervisors: named after the master's pid) ...
    assert not Path(f"/proc/{master}").exists()
    assert set(registry.running_clusters()) == before
    assert _labelled(f"bb{master}-") == []
    # ... and every run recorded like `balancebench run`.
    runs = sorted(p for p in (tmp_path / "session").iterdir() if p.name != "logs")
    assert [p.name for p in runs] == ["1-nftables-keepalive", "2-iptables-per-request"]
    for run, dataplane in zip(runs, ("nftables", "iptables"), strict=True):
        assert {"run.json", "summary.json", "summary.md", "report.html", "records"} <= {
            p.name for p in run.iterdir()
        }
        cell = json.loads((run / "summary.json").read_text())["cells"][0]
        assert cell["dataplane"] == dataplane
        assert cell["requests"] > 0 and cell["server_requests"] == cell["requests"]  # every request recorded
