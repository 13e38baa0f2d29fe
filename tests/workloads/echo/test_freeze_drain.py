"""A dying pod's last counts: /admin/freeze and /admin/drain answer with totals its clients can match."""

from __future__ import annotations

import json
import socket

from tests.workloads.echo.support import admin, client, get, raw_socket, read_until_closed, split_responses
from workloads.echo.process import EchoProcess

REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def test_freeze_answers_nothing_more_and_counts_exactly_what_was_answered(start_echo) -> None:
    echo: EchoProcess = start_echo("--latency", "300ms")
    sock = raw_socket(echo)
    sock.sendall(REQUEST)
    first = sock.recv(65536)
    sock.sendall(REQUEST)  # in flight (300 ms of latency) when the freeze comes
    status, body = admin(echo, "/admin/freeze", method="POST", data={})
    assert status == 200
    counts = json.loads(body)
    assert len(split_responses(first)) == 1
    assert counts["requests_total"] == 1 and counts["requests"]["200"] == 1
    sock.settimeout(0.6)
    try:
        late = sock.recv(65536)
    except TimeoutError:
        late = b""
    assert late == b""  # the frozen request is never answered, so never counted
    assert admin(echo, "/readyz")[0] == 503
    assert json.loads(admin(echo, "/admin/freeze", method="POST", data={})[1])["requests_total"] == 1
    sock.close()


def test_drain_closes_idle_connections_and_lets_in_flight_requests_finish(start_echo) -> None:
    echo: EchoProcess = start_echo("--latency", "200ms")
    idle = client(echo)
    assert get(idle).status == 200
    busy = raw_socket(echo)
    busy.sendall(REQUEST)  # answered during the drain, with Connection: close
    status, body = admin(echo, "/admin/drain", method="POST", data={"timeout_s": 5})
    assert status == 200
    responses = split_responses(read_until_closed(busy))
    assert [(code, headers.get("Connection")) for code, headers, _ in responses] == [(200, "close")]
    assert json.loads(body)["requests_total"] == 2
    assert admin(echo, "/readyz")[0] == 503
    idle.sock.settimeout(2)
    assert idle.sock.recv(1) == b""


def test_drain_rejects_a_bad_timeout(echo: EchoProcess) -> None:
    status, body = admin(echo, "/admin/drain", method="POST", data={"timeout_s": "soon"})
    assert status == 400 and "timeout_s" in body
    with socket.create_connection((echo.host, echo.port), timeout=5) as still_serving:
        still_serving.sendall(REQUEST)
        assert still_serving.recv(65536).startswith(b"HTTP/1.1 200")
