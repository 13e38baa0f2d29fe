"""Process life of the echo server: the SIGTERM drain, TCP_NODELAY, port clashes."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from tests.workloads.echo.support import admin, client, get, raw_socket, read_until_closed, split_responses
from workloads.echo.config import EchoConfig, Identity
from workloads.echo.process import EchoProcess
from workloads.echo.server import EchoServer


def test_sigterm_drains_in_flight_requests_closes_idle_ones_and_exits_0(start_echo) -> None:
    echo = start_echo("--latency", "2s")
    busy = raw_socket(echo)
    busy.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # in flight for 2 s
    idle = client(echo)
    idle_sock = raw_socket(echo)
    admin(echo, "/admin/faults", "PUT", {"latency_ms": 0})
    get(idle)
    idle_sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    idle_sock.recv(65536)

    echo.signal()
    started = time.monotonic()
    idle_sock.settimeout(5)
    idle_closed = read_until_closed(idle_sock)
    idle_closed_after = time.monotonic() - started
    [(status, headers, body)] = split_responses(read_until_closed(busy))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((echo.host, echo.port), timeout=2)
    exit_code = echo.stop()

    assert idle_closed == b"" and idle_closed_after < 0.5  # idle keep-alive closed at once
    assert (status, headers["Connection"], headers["X-Conn-Request"]) == (200, "close", "1")
    assert b'"conn_request":1' in body
    assert exit_code == 0
    assert "draining 3 connection(s)" in echo.stderr_text()


@pytest.mark.parametrize(
    ("shutdown_timeout", "signals"),
    [("500ms", 1), ("20s", 2)],
    ids=["deadline", "second-signal"],
)
def test_the_drain_is_bounded_by_the_shutdown_timeout_or_a_second_signal(
    start_echo, shutdown_timeout: str, signals: int
) -> None:
    echo = start_echo("--latency", "30s", "--shutdown-timeout", shutdown_timeout)
    stuck = raw_socket(echo)
    stuck.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)

    started = time.monotonic()
    for _ in range(signals):
        echo.signal()
        time.sleep(0.2)
    try:
        leftover = read_until_closed(stuck)
    except ConnectionResetError:
        leftover = b""
    exit_code = echo.stop()

    assert leftover == b""  # never answered: cut short
    assert exit_code == 0
    assert time.monotonic() - started < 5


def test_accepted_sockets_have_tcp_nodelay() -> None:
    """In-process, to read the option on the server's own socket."""
    results: dict[str, object] = {}

    async def scenario() -> None:
        server = EchoServer(
            EchoConfig(host="127.0.0.1", port=0, admin_port=0),
            identity=Identity(pod="p", pod_ip=None, node="n"),
        )
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"}")
        [connection] = server.state.connections
        sock = connection._transport.get_extra_info("socket")  # type: ignore[attr-defined]
        results["nodelay"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        writer.close()
        await server.stop()
        results["left"] = len(server.state.connections)

    thread = threading.Thread(target=asyncio.run, args=(scenario(),))
    thread.start()
    thread.join(timeout=30)

    assert results == {"nodelay": 1, "left": 0}


def test_a_busy_port_is_one_line_exit_1_and_no_listener_left(echo: EchoProcess) -> None:
    clash = EchoProcess(["--port", str(echo.port)])
    # the helper asks for port 0 first; the later --port wins, as argparse keeps the last value
    with pytest.raises(RuntimeError, match="exited with 1"):
        clash.start()
    lines = clash.stderr_text().strip().splitlines()
    assert len(lines) == 1 and "cannot listen" in lines[0] and "in use" in lines[0]


@pytest.mark.parametrize("log_requests", [False, True])
def test_requests_are_logged_only_when_asked(start_echo, log_requests: bool) -> None:
    echo = start_echo(*(["--log-requests"] if log_requests else []))
    connection = client(echo)
    get(connection, "/first")
    get(connection, "/second")
    echo.stop()

    lines = [line for line in echo.stderr_text().splitlines() if "conn=" in line]
    if log_requests:
        assert len(lines) == 2
        assert "GET /first 200 conn=1 request=1" in lines[0]
        assert "GET /second 200 conn=1 request=2" in lines[1]
    else:
        assert lines == []


def test_ipv6_loopback() -> None:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    with EchoProcess(host="::1", env={"POD_IP": ""}) as echo:
        sock = socket.create_connection(("::1", echo.port), timeout=10)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        [(status, headers, _)] = split_responses(read_until_closed(sock))
    assert status == 200
    assert headers["X-Client-Addr"].startswith("[::1]:")
    assert headers["X-Pod-IP"] == "::1"
