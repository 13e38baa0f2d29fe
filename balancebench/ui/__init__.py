"""``balancebench ui``: Locust's interactive web UI on a cluster, with a live Balance tab.

:func:`serve` starts the Locust master (``balancebench/ui/uimaster.py``) on the host with its web UI on
loopback; the master brings up the scenario's cluster and a worker in every source pod, and tears them down
when it quits. Ctrl-C (or SIGTERM) stops the master, which leaves nothing behind; if it does not stop in
time it is killed, and its clusters die with it (they are attached to it) and are deleted by name.

    serve(load_scenario(Path("loadtests/scenarios/seed.yaml")), scenario_file=..., session_dir=...,
          on_ready=lambda url: print(url))
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from balancebench.errors import InvalidInput, RunError

if TYPE_CHECKING:  # the pod end of the tunnel imports this package: keep it light
    from balancebench.scenario import Scenario

UIMASTER = Path(__file__).with_name("uimaster.py")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8089
READY_TIMEOUT = 120.0
"""Seconds for the master to bring the cluster up and answer on its web port."""
STOP_TIMEOUT = 30.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int) -> None:
    """InvalidInput unless ``host:port`` can be listened on right now."""
    if not 1 <= port <= 65535:
        raise InvalidInput(f"--web-port {port} is not a TCP port (1-65535)")
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise InvalidInput(
            f"cannot listen on {host}:{port} ({os.strerror(exc.errno) if exc.errno else exc}): "
            "pass another --web-port or --web-host"
        ) from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def master_argv(
    scenario: Scenario,
    *,
    scenario_file: Path,
    session_dir: Path,
    web_host: str,
    web_port: int,
    master_port: int,
    python: str = sys.executable,
) -> list[str]:
    """The Locust master's command line; the start form's defaults come from the scenario."""
    entry = scenario.policies[0]
    load = scenario.load_for(entry).build()
    from loadtests.policy import PRESETS

    preset, custom = (entry.policy, "") if entry.policy in PRESETS else ("custom", entry.policy)
    argv = [
        python, "-m", "locust", "-f", str(UIMASTER), "--master",
        "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port),
        "--expect-workers", str(scenario.cluster.sources),
        "--web-host", web_host, "--web-port", str(web_port),
        "--stop-timeout", "2",  # as uimaster.STOP_TIMEOUT: workers rejoin this long after a stop
        "--bb-scenario", str(scenario_file), "--bb-session-dir", str(session_dir),
        "--preset", preset, "--custom-policy", custom,
        "--users-per-source", str(load.users_per_source),
        "--think-time", f"{load.think_time_s:g}s", "--warmup", f"{load.warmup_s:g}s",
        "--max-duration", f"{max(load.duration_s or 0.0, 60.0):g}s",
        "--dataplane", scenario.dataplane_list()[0], "--service-path", scenario.paths[0],
        "--driver", load.driver,
    ]  # fmt: skip
    if load.rate is not None:
        argv += ["--rate", f"{load.rate:g}"]
    return argv


def serve(
    scenario: Scenario,
    *,
    scenario_file: Path,
    session_dir: Path,
    web_host: str = DEFAULT_HOST,
    web_port: int = DEFAULT_PORT,
    on_ready: Callable[[str], None] = lambda url: None,
) -> int:
    """Run the web UI until Ctrl-C/SIGTERM or the master ends; returns the master's exit code."""
    check_port(web_host, web_port)
    session_dir.mkdir(parents=True, exist_ok=True)
    (session_dir / "logs").mkdir(exist_ok=True)
    argv = master_argv(
        scenario,
        scenario_file=scenario_file,
        session_dir=session_dir,
        web_host=web_host,
        web_port=web_port,
        master_port=free_port(),
    )
    log = (session_dir / "logs" / "master.log").open("ab")
    # Its own session: a terminal's Ctrl-C comes to us, and we stop the master in order.
    master = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        host = "127.0.0.1" if web_host in ("", "0.0.0.0", "*") else web_host
        url = f"http://{'[' + host + ']' if ':' in host else host}:{web_port}/"
        _wait_ready(master, url, session_dir / "logs" / "master.log")
        on_ready(url)
        return master.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop(master)
        log.close()
        _delete_clusters(scenario, master.pid)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait_ready(master: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if master.poll() is not None:
            raise RunError(
                f"the Locust master exited with code {master.returncode}: {_last_line(log)} (log: {log})"
            )
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2.0) as response:
            if response.status == 200:
                return
        if time.monotonic() > deadline:
            raise RunError(f"the web UI did not answer on {url} in {READY_TIMEOUT:g}s (log: {log})")
        time.sleep(0.3)


def _stop(master: subprocess.Popen[bytes]) -> None:
    if master.poll() is None:
        with contextlib.suppress(OSError):
            master.send_signal(signal.SIGTERM)  # Locust quits; the session brings the cluster down
    try:
        master.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        master.kill()
        master.wait()


def _delete_clusters(scenario: Scenario, master_pid: int) -> None:
    """Whatever the master left (it was killed): its clusters are named after its pid."""
    from balancebench.clusters import registry
    from balancebench.clusters.base import DATAPLANES

    for dataplane in DATAPLANES:
        name = f"bb{master_pid}-{dataplane}"[:32]  # as runner.cluster_spec names them, in the master
        with contextlib.suppress(Exception):
            registry.delete_cluster(name, scenario.cluster.provider)


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip() if lines else "no output"
