"""The echo's HTTP/2 side on the wire: prior knowledge, GOAWAY and refused streams, the run-time policy."""

from __future__ import annotations

import json
import socket

import h2.config
import h2.connection
import h2.errors
import h2.events

from loadtests.h2client import _GoawaySplitter
from tests.workloads.echo.support import admin, scrape
from workloads.echo.process import EchoProcess


def _h2(echo: EchoProcess) -> tuple[socket.socket, h2.connection.H2Connection]:
    sock = socket.create_connection((echo.host, echo.port), timeout=10)
    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def _request(conn: h2.connection.H2Connection, stream_id: int) -> None:
    conn.send_headers(
        stream_id,
        [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/")],
        end_stream=True,
    )


def _events_until_closed(
    sock: socket.socket, conn: h2.connection.H2Connection
) -> tuple[list[h2.events.Event], list[int]]:
    """Everything the server sent: h2's events, and the last stream ids of its GOAWAY frames (read apart,
    as h2 would reject the responses that follow a GOAWAY)."""
    events: list[h2.events.Event] = []
    goaways: list[int] = []
    splitter = _GoawaySplitter()
    while data := sock.recv(65536):
        passed, found = splitter.feed(data)
        goaways += found
        events += conn.receive_data(passed) if passed else []
        sock.sendall(conn.data_to_send())
    return events, goaways


def test_streams_beyond_max_requests_are_refused_after_goaway() -> None:
    # h2 (as a client) stops at the server's GOAWAY, so the three streams go out before reading anything
    with EchoProcess(["--max-requests-per-connection", "2"]) as echo:
        sock, conn = _h2(echo)
        for stream_id in (1, 3, 5):
            _request(conn, stream_id)
        sock.sendall(conn.data_to_send())
        events, goaways = _events_until_closed(sock, conn)
        metrics = scrape(echo)
    answered = {e.stream_id for e in events if isinstance(e, h2.events.ResponseReceived)}
    assert answered == {1, 3}
    refused = [e for e in events if isinstance(e, h2.events.StreamReset)]
    assert [(e.stream_id, e.error_code) for e in refused] == [(5, h2.errors.ErrorCodes.REFUSED_STREAM)]
    assert goaways == [3]
    assert metrics["echo_streams_refused_total"] == 1
    assert metrics['echo_requests_total{status="200"}'] == 2


def test_the_connection_policy_changes_at_run_time_and_rejects_bad_values() -> None:
    with EchoProcess([]) as echo:
        status, body = admin(echo, "/admin/policy", "PUT", {"max_requests_per_connection": 1})
        assert status == 200 and json.loads(body)["max_requests_per_connection"] == 1
        sock, conn = _h2(echo)
        _request(conn, 1)
        sock.sendall(conn.data_to_send())
        events, goaways = _events_until_closed(sock, conn)
        assert goaways == [1]
        assert [e.stream_id for e in events if isinstance(e, h2.events.StreamEnded)] == [1]
        status, body = admin(echo, "/admin/policy", "PUT", {"max_connection_age_s": -1})
        assert status == 400 and "max_connection_age_s" in body
        status, body = admin(echo, "/admin/policy", "PUT", {"latency": 1})
        assert status == 400 and "unknown policy latency" in body
        status, body = admin(echo, "/admin/policy", "PUT", {"max_requests_per_connection": None})
        assert status == 200 and json.loads(body)["max_requests_per_connection"] is None
