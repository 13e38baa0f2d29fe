"""Real client drivers (Go net/http, OkHttp, the JDK's HttpClient, aiohttp) against a real echo server:
exact connection counts.

The client programs are built by ``make setup``; without their toolchain these tests skip, saying so.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import gevent
import pytest

from balancebench.errors import MissingFeature
from balancebench.loadrun import LOCUSTFILE
from balancebench.runner import plan
from balancebench.scenario import load_scenario
from loadtests.client import Exchange
from loadtests.policy import parse_policy
from loadtests.realclients import REAL_CLIENTS
from loadtests.realclients.bridge import ClientProcess
from tests.loadtests.conftest import LocustRun, run_locust
from workloads.echo.process import EchoProcess


def _needs(name: str) -> pytest.MarkDecorator:
    missing = REAL_CLIENTS[name].missing()
    return pytest.mark.skipif(missing is not None, reason=missing or "")


GO = pytest.param("go", marks=_needs("go"), id="go")
OKHTTP = pytest.param("okhttp", marks=_needs("okhttp"), id="okhttp")
JDK = pytest.param("jdk", marks=_needs("jdk"), id="jdk")
AIOHTTP = pytest.param("aiohttp", marks=_needs("aiohttp"), id="aiohttp")


@pytest.mark.parametrize("driver", [GO, OKHTTP])
@pytest.mark.parametrize(
    ("policy", "users", "args", "connections"),
    [
        ("keepalive", 1, ["--stop-after-requests", "40"], 1),
        ("per-request", 1, ["--stop-after-requests", "40"], 40),
        # 4 users, a pool each: one connection per user
        ("keepalive", 4, ["--stop-after-requests", "40"], 4),
        # idle gaps (300 ms think time) longer than the 100 ms idle timeout: a new connection each time
        ("idle=100ms", 1, ["--stop-after-requests", "6", "--think-time", "300ms"], 6),
        # the library keeps no idle connection at all
        ("max-idle=0", 1, ["--stop-after-requests", "10"], 10),
    ],
    ids=["keepalive", "per-request", "keepalive-4-users", "idle-gaps", "no-idle"],
)
def test_real_driver_connection_counts(
    echo: EchoProcess,
    tmp_path: Path,
    driver: str,
    policy: str,
    users: int,
    args: list[str],
    connections: int,
) -> None:
    run = run_locust(echo, tmp_path, policy=policy, users=users, args=["--driver", driver, *args])
    _assert_exact_counts(run, args, connections)
    assert {r["target_pod"] for r in run.rows} == {"echo-0"}


def _assert_exact_counts(run: LocustRun, args: list[str], connections: int) -> None:
    """Every request of ``--stop-after-requests`` answered, on exactly ``connections`` connections, counted
    alike by the client and by the server."""
    expected = int(args[args.index("--stop-after-requests") + 1])
    assert len(run.rows) == run.server_requests == expected
    assert run.server_connections == connections
    assert run.client_connections() == run.server_connections_seen() == connections
    assert all(r["status"] == 200 and r["error"] == "" and r["client_conn"] >= 0 for r in run.rows)


_COMMON_CASES = [
    ("keepalive", 1, ["--stop-after-requests", "40"], 1, "keepalive"),
    ("per-request", 1, ["--stop-after-requests", "40"], 40, "per-request"),
    ("keepalive", 4, ["--stop-after-requests", "40"], 4, "keepalive-4-users"),
    # The JDK's keep-alive timeout is whole seconds (jdk.httpclient.keepalive.timeout), and it expires a
    # connection at the end of the second its timeout ends in (truncated): up to 2 s after it went idle for
    # idle=1s, and its selector thread purges it then. Gaps of 2 s left milliseconds, and a CI run on a
    # loaded machine reused one connection (3 of 4); gaps of 3 s leave a second.
    ("idle=1s", 1, ["--stop-after-requests", "4", "--think-time", "3s"], 4, "idle-gaps"),
]


@pytest.mark.parametrize(
    ("driver", "policy", "users", "args", "connections"),
    [
        pytest.param(driver, policy, users, args, connections, marks=_needs(driver), id=f"{driver}-{name}")
        for driver in ("jdk", "aiohttp")
        for policy, users, args, connections, name in [
            *_COMMON_CASES,
            # The preset itself, one pool shared by 4 users: their concurrency, never more.
            (driver, 4, ["--stop-after-requests", "40", "--think-time", "50ms"], 4, "preset-4-users"),
        ]
    ],
)
def test_jdk_and_aiohttp_connection_counts(
    driver: str, policy: str, users: int, args: list[str], connections: int, tmp_path: Path
) -> None:
    # Each request takes 100 ms, so requests sent together are in flight together and the 4 users need
    # 4 connections (no fewer: one user's request never finishes before another's starts).
    with EchoProcess(["--latency", "100ms"], env={"POD_NAME": "echo-0", "NODE_NAME": "node-1"}) as echo:
        run = run_locust(echo, tmp_path, policy=policy, users=users, args=["--driver", driver, *args])
    _assert_exact_counts(run, args, connections)


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (
            ["--driver", "go", "--policy", "max-age=30s"],
            {},
            "driver go (Go net/http (DefaultTransport)) has no",
        ),
        (["--driver", "okhttp", "--policy", "max-conns=4"], {}, "has no max-conns setting"),
        (["--driver", "okhttp"], {"PATH": "/nonexistent"}, "driver okhttp needs java: run 'make setup'"),
        (["--driver", "jdk"], {"PATH": "/nonexistent"}, "driver jdk needs java: run 'make setup'"),
        (["--driver", "jdk", "--policy", "jdk,idle=1500ms"], {}, "keeps idle connections for whole seconds"),
        (["--driver", "jdk", "--policy", "max-idle=0"], {}, "cannot keep no idle connection"),
        (["--driver", "aiohttp", "--policy", "aiohttp,max-idle=5"], {}, "has no max-idle setting"),
    ],
    ids=[
        "go-max-age",
        "okhttp-max-conns",
        "okhttp-no-java",
        "jdk-no-java",
        "jdk-idle-ms",
        "jdk-no-idle",
        "aiohttp-max-idle",
    ],
)
def test_a_driver_that_cannot_run_says_how_in_one_line_and_exits_2(
    args: list[str], env: dict[str, str], says: str
) -> None:
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "1", "-t", "5s"]
    argv += ["-H", "http://127.0.0.1:9", *args]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **env}
    )
    assert done.returncode == 2, done.stderr
    ours = [line for line in done.stderr.splitlines() if line.startswith("balancebench:")]
    assert len(ours) == 1 and says in ours[0], done.stderr
    assert "Traceback" not in done.stderr


def test_the_aiohttp_driver_without_aiohttp_says_how_in_one_line_and_exits_2() -> None:
    # aiohttp made unimportable in the Locust process (and so in the program it would start).
    locust = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "1", "-t", "5s"]
    locust += ["-H", "http://127.0.0.1:9", "--driver", "aiohttp"]
    script = (
        "import runpy, sys; sys.modules['aiohttp'] = None; "
        f"sys.argv = {locust[2:]!r}; runpy.run_module('locust', run_name='__main__', alter_sys=True)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    ours = [line for line in done.stderr.splitlines() if line.startswith("balancebench:")]
    assert ours == [
        "balancebench: driver aiohttp needs the Python module aiohttp: run 'make setup' "
        "(installs balancebench's dependencies into .venv), or 'pip install aiohttp'"
    ], done.stderr


def test_an_unbuilt_client_without_its_toolchain_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unbuilt = replace(REAL_CLIENTS["go"], artifact=tmp_path / "bbclient-go")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert unbuilt.missing() == (
        "driver go needs go: run 'make setup' (installs Debian's golang-go), or 'apt-get install golang-go'"
    )
    monkeypatch.undo()
    if shutil.which("go") is not None:
        assert unbuilt.missing() == "driver go is not built (or older than its source): run 'make setup'"


@pytest.mark.parametrize("driver", ["okhttp", "jdk"])
def test_a_scenario_with_a_missing_driver_fails_before_any_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, driver: str
) -> None:
    scenario_file = tmp_path / "s.yaml"
    scenario_file.write_text(
        f"name: s\npolicies: [{driver}]\nload: {{driver: {driver}, duration: 3s, warmup: 1s}}\n"
    )
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingFeature, match=f"driver {driver} needs java"):
        plan(load_scenario(scenario_file))


def _staggered(driver: str, policy: str) -> tuple[list[int], list[int]]:
    """Server connection ids of 4 overlapping requests, then of 3 requests one at a time.

    One request warms the client up; then 4 requests started 50 ms apart, each answered after 300 ms: the
    warm connection and 3 new ones, taken and given back in the same order (the server numbers connections
    as it accepts them). Then one request at a time."""
    with EchoProcess(["--latency", "300ms"], env={"POD_NAME": "echo-0"}) as echo:
        ids = itertools.count(1)
        process = ClientProcess(REAL_CLIENTS[driver], parse_policy(policy), echo.url, next_id=ids.__next__)
        try:
            pool = process.driver()
            pool.request("/")
            answered: list[Exchange] = []

            def staggered(delay: float) -> None:
                gevent.sleep(delay)
                answered.append(pool.request("/"))

            gevent.joinall([gevent.spawn(staggered, 0.05 * i) for i in range(4)], raise_error=True)
            opened = [e.server_conn for e in answered]
            following = [pool.request("/").server_conn for _ in range(3)]
        finally:
            process.close()
    return opened, following


@pytest.mark.parametrize(
    ("driver", "policy", "picks"),
    [
        # OkHttp walks its pool in creation order and takes the first idle connection: the oldest.
        pytest.param("okhttp", "okhttp", "oldest", marks=_needs("okhttp"), id="okhttp-oldest"),
        # Go's queueForIdleConn takes the last connection put back: the most recently used.
        pytest.param("go", "go,max-idle=4", "mru", marks=_needs("go"), id="go-mru"),
        # The JDK's ConnectionPool.findConnection takes removeFirst() of a list filled with add(), and
        # aiohttp's BaseConnector._get popleft() of a deque filled with append(): the least recently used.
        pytest.param("jdk", "jdk", "lru", marks=_needs("jdk"), id="jdk-lru"),
        pytest.param("aiohttp", "aiohttp", "lru", marks=_needs("aiohttp"), id="aiohttp-lru"),
    ],
)
def test_real_clients_pick_the_connection_their_preset_says(driver: str, policy: str, picks: str) -> None:
    opened, following = _staggered(driver, policy)
    assert opened == sorted(opened) and len(set(opened)) == 4
    expected = {"oldest": [opened[0]] * 3, "mru": [opened[-1]] * 3, "lru": opened[:3]}
    assert following == expected[picks]


@pytest.mark.parametrize(
    ("driver", "policy", "opened_distinct", "kept"),
    [
        # jdk.httpclient.connectionPoolSize=2: of the 4 connections given back, the pool keeps 2 and
        # closes the others, so the requests that follow share 2 of them and open none.
        pytest.param("jdk", "jdk,max-idle=2", 4, 2, marks=_needs("jdk"), id="jdk-max-idle"),
        # TCPConnector(limit=2): the 4 overlapping requests wait for the 2 connections there may be.
        pytest.param("aiohttp", "aiohttp,max-conns=2", 2, 2, marks=_needs("aiohttp"), id="aiohttp-limit"),
    ],
)
def test_real_clients_keep_the_connections_their_knobs_say(
    driver: str, policy: str, opened_distinct: int, kept: int
) -> None:
    opened, following = _staggered(driver, policy)
    assert len(set(opened)) == opened_distinct
    assert set(following) <= set(opened) and len(set(following)) == kept


@pytest.mark.parametrize("driver", [GO, OKHTTP, JDK, AIOHTTP])
def test_real_driver_runs_the_open_loop_and_flags_warmup(
    echo: EchoProcess, tmp_path: Path, driver: str
) -> None:
    # The Locust users keep the load model: 40 requests/s for 2 s, the first 500 ms flagged warm-up.
    run = run_locust(
        echo, tmp_path, policy="keepalive", users=2,
        args=["--driver", driver, "--rate", "40", "--warmup", "500ms", "--duration", "2s"],
    )  # fmt: skip
    rows = sorted(run.rows, key=lambda r: r["ts"])
    assert len(rows) > 20 and run.server_requests == len(rows)
    gaps = [b["ts"] - a["ts"] for a, b in itertools.pairwise(rows)]
    assert all(abs(gap - 0.025) < 1e-6 for gap in gaps)  # the schedule's intended times, 40/s
    assert sum(r["warmup"] for r in rows) == 20  # the slots before 500 ms
    assert all(r["error"] == "" and r["wait_ms"] >= 0 for r in rows)
    assert run.client_connections() == run.server_connections == 2
