"""One echo host process serving several pods: each keeps its identity, counters, readiness, faults and
policies, and a kill closes that pod's sockets and connections only.

The pods listen on loopback ports here (``netns: null``); the netns cluster tests run the same host with
each pod's sockets opened inside its own network namespace.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from balancebench.clusters.netns.echohosts import EchoHostProcess


async def _with_host(tmp_path: Path, body: Callable[[EchoHostProcess], Awaitable[None]]) -> None:
    host = EchoHostProcess.start(
        "test",
        command=[sys.executable, "-m", "workloads.echo.host"],
        log=tmp_path / "host.log",
        env=dict(os.environ),
    )
    try:
        await body(host)
        assert (await host.request({"op": "stop"}))["ok"]
        assert await asyncio.to_thread(host.process.wait, 10) == 0
    finally:
        host.close()
        host.process.wait()


async def _add(host: EchoHostProcess, pod: str, *flags: str) -> dict[str, object]:
    return await host.request(
        {
            "op": "add",
            "pod": pod,
            "netns": None,
            "argv": ["--host", "127.0.0.1", "--port", "0", "--admin-port", "0", *flags],
            "env": {"POD_NAME": pod, "POD_IP": "127.0.0.1", "NODE_NAME": "node-t"},
        }
    )


def _get(
    port: int, path: str = "/", method: str = "GET", body: bytes | None = None
) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        response.read()
        return response.status, dict(response.getheaders())
    finally:
        conn.close()


def test_pods_of_one_host_are_separate_and_die_alone(tmp_path: Path) -> None:
    asyncio.run(_with_host(tmp_path, _pods_are_separate))


async def _pods_are_separate(host: EchoHostProcess) -> None:
    one = await _add(host, "echo-0", "--max-requests-per-connection", "2")
    two = await _add(host, "echo-1", "--error-rate", "1")
    assert one["ok"] and two["ok"] and one["ready"] and two["ready"]
    port_one, port_two = int(one["port"]), int(two["port"])  # type: ignore[call-overload]
    admin_one = int(one["admin_port"])  # type: ignore[call-overload]

    # identity and per-pod faults
    status, headers = await asyncio.to_thread(_get, port_one)
    assert (status, headers["X-Pod-Name"]) == (200, "echo-0")
    status, headers = await asyncio.to_thread(_get, port_two)
    assert (status, headers["X-Pod-Name"]) == (503, "echo-1")

    # per-pod policy: echo-0 closes a connection after its 2nd response, echo-1 keeps it
    with socket.create_connection(("127.0.0.1", port_one), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" * 2)
        answered = b""
        while chunk := sock.recv(65536):
            answered += chunk
    assert answered.count(b"HTTP/1.1 200") == 2 and b"Connection: close" in answered

    # readiness per pod, through the pod's own admin port and the host's probe
    status, _ = await asyncio.to_thread(
        _get, admin_one, "/admin/ready", "POST", json.dumps({"ready": False}).encode()
    )
    assert status == 200
    assert (await host.request({"op": "ready"}))["ready"] == {"echo-0": False, "echo-1": True}

    # per-pod counters: echo-0 answered 3 requests (1 + 2 pipelined), echo-1 one 503
    status, _ = await asyncio.to_thread(_get, admin_one, "/metrics")
    assert status == 200
    conn = http.client.HTTPConnection("127.0.0.1", admin_one, timeout=5)
    conn.request("POST", "/admin/freeze", body=b"{}")
    counts = json.loads(conn.getresponse().read())
    conn.close()
    assert counts["requests_total"] == 3

    # a kept-alive connection to echo-1 survives echo-0's kill; echo-0's sockets are gone
    kept = http.client.HTTPConnection("127.0.0.1", port_two, timeout=5)
    kept.request("GET", "/")
    kept.getresponse().read()
    idle_one = socket.create_connection(("127.0.0.1", port_one), timeout=5)
    assert (await host.request({"op": "kill", "pod": "echo-0"}))["ok"]
    assert idle_one.recv(1) == b"", "the killed pod's connection was closed"
    idle_one.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port_one), timeout=5).close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", admin_one), timeout=5).close()
    kept.request("GET", "/")
    response = kept.getresponse()
    response.read()
    assert response.getheader("X-Pod-Name") == "echo-1"
    kept.close()
    assert (await host.request({"op": "ready"}))["ready"] == {"echo-1": True}

    # a scale-out adds sockets to the same process; a bad flag is the pod's own error
    three = await _add(host, "echo-2")
    assert three["ok"]
    status, headers = await asyncio.to_thread(_get, int(three["port"]))  # type: ignore[call-overload]
    assert headers["X-Pod-Name"] == "echo-2"
    bad = await _add(host, "echo-3", "--latency", "soon")
    assert bad["ok"] is False and bad["kind"] == "config" and "--latency" in str(bad["error"])
    assert set((await host.request({"op": "ready"}))["ready"]) == {"echo-1", "echo-2"}
