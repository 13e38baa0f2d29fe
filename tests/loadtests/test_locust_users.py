"""Real Locust runs against a real echo server that counts connections: exact counts per policy.

Every run checks three views agree: the client's connection ids in the records, the server connection ids
the echo server stamped on its responses, and the server's own connection counter.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests

from balancebench.loadrun import LOCUSTFILE
from tests.loadtests.conftest import echo_metrics, run_locust
from workloads.echo.process import EchoProcess


@pytest.mark.parametrize(
    ("policy", "users", "args", "requests", "connections"),
    [
        ("keepalive", 1, ["--stop-after-requests", "100"], 100, 1),
        ("per-request", 1, ["--stop-after-requests", "100"], 100, 100),
        ("max-requests=10", 1, ["--stop-after-requests", "100"], 100, 10),
        # an idle timeout only rebalances when there are idle gaps
        ("idle=0.2s", 1, ["--stop-after-requests", "8", "--think-time", "300ms"], 8, 8),
        ("idle=0.2s", 1, ["--stop-after-requests", "100"], 100, 1),
        # 4 users sharing one pool of at most 4 idle connections never need a fifth
        ("max-idle=4,scope=source", 4, ["--stop-after-requests", "400"], 400, 4),
        # paced on/off: bursts of 5 then 400 ms idle, longer than the 200 ms idle timeout
        ("idle=200ms", 1, ["--stop-after-requests", "15", "--burst", "5", "--pause", "400ms"], 15, 3),
    ],
    ids=["keepalive", "per-request", "max-requests", "idle-gaps", "idle-busy", "max-idle-shared", "on-off"],
)
def test_policy_connection_counts(
    echo: EchoProcess,
    tmp_path: Path,
    policy: str,
    users: int,
    args: list[str],
    requests: int,
    connections: int,
) -> None:
    run = run_locust(echo, tmp_path, policy=policy, users=users, args=args)
    assert len(run.rows) == requests
    assert run.server_requests == requests
    assert run.client_connections() == connections
    assert run.server_connections_seen() == connections
    assert run.server_connections == connections
    assert all(r["status"] == 200 and r["error"] == "" for r in run.rows)


def test_max_age_retires_connections_under_steady_load(echo: EchoProcess, tmp_path: Path) -> None:
    # Connections opened at ~0 s, ~1 s, ~2 s and ~3 s of a 3.5 s run without pauses.
    run = run_locust(echo, tmp_path, policy="max-age=1s", args=["--duration", "3.5s"])
    assert run.client_connections() == 4
    assert run.server_connections == 4
    assert run.server_requests == len(run.rows) > 100


def test_records_carry_the_schema_fields(echo: EchoProcess, tmp_path: Path) -> None:
    run = run_locust(echo, tmp_path, policy="max-requests=5", args=["--stop-after-requests", "20"])
    rows = run.rows
    assert {r["cell"] for r in rows} == {"test"}
    assert {r["policy"] for r in rows} == {"max-requests=5"}
    assert {(r["target_pod"], r["target_node"]) for r in rows} == {("echo-0", "node-1")}
    assert [r["conn_request"] for r in rows] == [1, 2, 3, 4, 5] * 4
    assert all(r["latency_ms"] > 0 and r["wait_ms"] == 0 for r in rows)
    timestamps = [r["ts"] for r in rows]
    assert timestamps == sorted(timestamps)


def test_open_loop_paces_and_flags_warmup(echo: EchoProcess, tmp_path: Path) -> None:
    run = run_locust(
        echo, tmp_path, policy="keepalive", users=2,
        args=["--rate", "40", "--warmup", "500ms", "--duration", "2s"],
    )  # fmt: skip
    rows = sorted(run.rows, key=lambda r: r["ts"])
    assert 70 <= len(rows) <= 81  # 40/s for 2 s: slots at 0, 25 ms, … 1975 ms
    gaps = [b["ts"] - a["ts"] for a, b in itertools.pairwise(rows)]
    assert all(abs(gap - 0.025) < 1e-6 for gap in gaps)  # intended times, not actual ones
    warm = [r for r in rows if r["warmup"]]
    assert len(warm) == 20  # the slots before 500 ms
    assert rows[len(warm)]["ts"] - rows[0]["ts"] == pytest.approx(0.5)
    assert run.server_requests == len(rows)


@pytest.mark.parametrize(
    ("driver", "policy", "connections"),
    [
        ("httpx", "keepalive", 1),
        ("httpx", "per-request", 30),
        ("requests", "keepalive", 1),
        ("requests", "per-request", 30),
    ],
)
def test_library_drivers_use_their_own_pools(
    echo: EchoProcess, tmp_path: Path, driver: str, policy: str, connections: int
) -> None:
    run = run_locust(echo, tmp_path, policy=policy, args=["--driver", driver, "--stop-after-requests", "30"])
    assert len(run.rows) == run.server_requests == 30
    assert run.server_connections == connections
    assert run.client_connections() == run.server_connections_seen() == connections
    assert all(r["status"] == 200 and r["client_conn"] >= 0 for r in run.rows)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--policy", "okhtp"], "unknown pool policy 'okhtp'"),
        (["--policy", "idle=0s"], "idle must be a positive duration"),
        (["--policy=max-age=-1s"], "max-age must be a positive duration"),
        (["--think-time=-1s"], "--think-time must be zero or a positive duration"),
        (["--driver", "requests", "--policy", "max-age=30s"], "driver requests cannot enforce max-age"),
        (["--rate", "100", "--think-time", "1s"], "rate (open loop) excludes think time"),
        (["--rate", "lots"], "--rate must be a number"),
    ],
)
def test_bad_options_fail_with_one_line_and_exit_2(args: list[str], says: str) -> None:
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "1", "-t", "5s"]
    argv += ["-H", "http://127.0.0.1:9", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    ours = [line for line in done.stderr.splitlines() if line.startswith("balancebench:")]
    assert len(ours) == 1 and says in ours[0], done.stderr
    assert "Traceback" not in done.stderr


def test_sigterm_keeps_what_was_measured(echo: EchoProcess, tmp_path: Path) -> None:
    # The periodic flush is pushed out of reach: only the flush on shutdown can save these rows.
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "-u", "2", "-r", "200", "-t", "60s", "-H", f"http://{echo.host}:{echo.port}", "--policy", "keepalive",
        "--cell", "test", "--records-dir", str(tmp_path), "--flush-interval", "60s", "--think-time", "5ms",
    ]  # fmt: skip
    before = echo_metrics(echo)["echo_requests_total"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while echo_metrics(echo)["echo_requests_total"] - before < 50:
            assert time.monotonic() < deadline and process.poll() is None, "no load arrived"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    served = int(echo_metrics(echo)["echo_requests_total"] - before)
    rows = pq.read_table(tmp_path).num_rows
    # Users are stopped at once on SIGTERM: at most one request per user may be cut off in flight.
    assert served - 2 <= rows <= served


@pytest.mark.parametrize("policy", ["jdk", "keepalive"])
def test_a_user_stopped_while_waiting_sends_nothing_more(
    echo: EchoProcess, tmp_path: Path, policy: str
) -> None:
    # The locustfile stops the user while it waits after its 20th request (think time 0: Locust's sleep(0));
    # not imported here, as importing Locust would monkey-patch the test process. The
    # added latency keeps any next request in flight when the kill arrives, so a request sent after the
    # stop would be answered by the server and missing from the records, every time.
    faults = f"{echo.admin_url}/admin/faults"
    requests.put(faults, json={"latency_ms": 50}, timeout=10).raise_for_status()
    try:
        run = run_locust(
            echo,
            tmp_path,
            policy=policy,
            args=["--think-time", "0"],
            locustfile=Path(__file__).with_name("stop_while_waiting.py"),
        )
    finally:
        requests.put(faults, json={"latency_ms": 0}, timeout=10).raise_for_status()
    assert run.server_requests == len(run.rows) == 20, run.output  # STOP_AFTER there
    assert all(r["error"] == "" for r in run.rows)
