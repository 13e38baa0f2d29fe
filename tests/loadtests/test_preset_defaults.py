"""Each client preset against the defaults of the client it is named after, read from the installed client.

Python libraries are imported and asked; Go's defaults are read from the installed Go source, OkHttp's and
the JDK's from their installed bytecode (``javap``). A library update that changes a default fails here,
so a preset never silently describes a client that no longer exists. A client not installed is skipped,
saying how to get it.
"""

from __future__ import annotations

import asyncio
import queue
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from loadtests.policy import AIOHTTP, GO, HTTPX, JDK, OKHTTP, PRESETS, REQUESTS

UNITS = {"SECONDS": 1, "MINUTES": 60, "HOURS": 3600}


def test_httpx_default_limits() -> None:
    import httpx

    limits = httpx.Client()._transport._pool  # type: ignore[attr-defined]
    default = httpx._config.DEFAULT_LIMITS  # what Client() uses when given no limits
    assert HTTPX.max_idle == default.max_keepalive_connections == limits._max_keepalive_connections
    assert HTTPX.max_connections == default.max_connections == limits._max_connections
    assert HTTPX.idle_timeout == default.keepalive_expiry == limits._keepalive_expiry


def test_requests_default_pool_over_urllib3() -> None:
    import requests.adapters
    import urllib3.connectionpool

    assert REQUESTS.max_idle == requests.adapters.DEFAULT_POOLSIZE
    # pool_block=False: a full pool opens more connections instead of waiting, so there is no cap.
    assert requests.adapters.DEFAULT_POOLBLOCK is False and REQUESTS.max_connections is None
    # urllib3 keeps idle connections in a LIFO queue (most recently used first) and never expires them.
    assert urllib3.connectionpool.HTTPConnectionPool.QueueCls is queue.LifoQueue and REQUESTS.pick == "mru"
    assert REQUESTS.idle_timeout is None


def test_aiohttp_tcp_connector_defaults() -> None:
    aiohttp = pytest.importorskip("aiohttp", reason="aiohttp is not installed (pip install aiohttp)")

    async def defaults() -> tuple[float, int]:
        connector = aiohttp.TCPConnector()
        try:
            return connector._keepalive_timeout, connector.limit
        finally:
            await connector.close()

    keepalive_timeout, limit = asyncio.run(defaults())
    assert AIOHTTP.idle_timeout == keepalive_timeout
    assert AIOHTTP.max_connections == limit


def test_go_default_transport() -> None:
    go = shutil.which("go")
    if go is None:
        pytest.skip("Go is not installed (scripts/setup.sh installs golang-go for the go driver)")
    goroot = subprocess.run([go, "env", "GOROOT"], capture_output=True, text=True, check=True).stdout.strip()
    source = (Path(goroot) / "src/net/http/transport.go").read_text()
    default_transport = source[source.index("var DefaultTransport") :][:2000]
    idle_timeout = re.search(r"IdleConnTimeout:\s+(\d+) \* time\.Second", default_transport)
    max_idle_per_host = re.search(r"const DefaultMaxIdleConnsPerHost = (\d+)", source)
    assert idle_timeout is not None and max_idle_per_host is not None
    assert GO.idle_timeout == float(idle_timeout[1])
    assert GO.max_idle == int(max_idle_per_host[1])
    assert "MaxConnsPerHost" not in default_transport and GO.max_connections is None  # unbounded dials


def _javap(*args: str) -> str:
    javap = shutil.which("javap")
    if javap is None:
        pytest.skip("javap is not installed (a JDK: scripts/setup.sh installs one for the okhttp driver)")
    done = subprocess.run([javap, "-c", "-p", *args], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        pytest.skip(f"javap cannot read {args[-1]}: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def test_okhttp_default_connection_pool() -> None:
    jars = sorted(Path("/usr/share/java").glob("okhttp.jar"))
    if not jars:
        pytest.skip(
            "OkHttp is not installed (scripts/setup.sh installs libokhttp-java for the okhttp driver)"
        )
    code = _javap("-cp", str(jars[0]), "okhttp3.ConnectionPool")
    # public ConnectionPool() { this(maxIdleConnections, keepAliveDuration, timeUnit); }
    constructor = code[code.index("public okhttp3.ConnectionPool();") :].split("return", 1)[0]
    max_idle = re.search(r"(?:iconst_|bipush\s+)(\d+)", constructor)
    duration = re.search(r"long (\d+)l", constructor)
    unit = re.search(r"TimeUnit\.(\w+)", constructor)
    assert max_idle and duration and unit, constructor
    assert OKHTTP.max_idle == int(max_idle[1])
    assert OKHTTP.idle_timeout == int(duration[1]) * UNITS[unit[1]]
    assert PRESETS["okhttp-1s"].max_idle == OKHTTP.max_idle  # the seed's fix changes only the keep-alive


def test_jdk_http_client_keepalive() -> None:
    code = _javap("--module", "java.net.http", "jdk.internal.net.http.ConnectionPool")
    found = re.search(
        r"jdk\.httpclient\.keepalive\.timeout\s*\n\s*\d+: (?:sipush|bipush|ldc\w*)\s+#?(\d+)", code
    )
    assert found is not None, "the JDK's ConnectionPool no longer reads jdk.httpclient.keepalive.timeout"
    assert JDK.idle_timeout == float(found[1]), "this JDK's default differs: update the jdk preset's note"
