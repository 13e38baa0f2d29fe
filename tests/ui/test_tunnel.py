"""The stdin/stdout tunnel: connections made at its pod end reach a real server at its host end."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence

import pytest

from balancebench.ui.tunnel import Tunnel


class LocalExec:
    """Runs the pod end as a plain process on this machine: the same program, without a pod around it."""

    def exec(self, pod: str, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        kwargs.pop("env", None)
        return subprocess.Popen(list(argv), **kwargs)  # type: ignore[call-overload]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def upper_server() -> Iterator[tuple[str, int]]:
    """A TCP server that answers every chunk in upper case, until the client closes."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)

    def handle(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data.upper())

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[:2]
    server.close()


def _exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        received = b""
        while len(received) < len(payload):
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def test_connections_cross_the_tunnel_both_ways(upper_server: tuple[str, int]) -> None:
    port = _free_port()
    tunnel = Tunnel.start(LocalExec(), "source-0", listen=("127.0.0.1", port), to=upper_server)
    try:
        assert _exchange(port, b"hello") == b"HELLO"
        big = bytes(range(97, 123)) * 40_000  # ~1 MB: many frames
        results: list[bytes] = []
        threads = [threading.Thread(target=lambda: results.append(_exchange(port, big))) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert results == [big.upper()] * 4
    finally:
        tunnel.close()
    assert tunnel.process.returncode is not None  # the pod end ends with the host end
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_connection_to_nothing_is_closed_at_the_pod_end() -> None:
    port = _free_port()
    tunnel = Tunnel.start(LocalExec(), "source-0", listen=("127.0.0.1", port), to=("127.0.0.1", _free_port()))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"anyone?")
            assert conn.recv(10) == b""  # the host end could not connect: closed, not hung
    finally:
        tunnel.close()
