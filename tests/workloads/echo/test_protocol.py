"""The echo port against a real server: identity, connection ids and indices, policies, faults, HTTP."""

from __future__ import annotations

import math
import socket
import statistics
import time

import pytest

from tests.workloads.echo.support import (
    admin,
    client,
    get,
    raw_socket,
    read_until_closed,
    scrape,
    split_responses,
)
from workloads.echo.process import EchoProcess

IDENTITY_FIELDS = {
    "pod": "X-Pod-Name",
    "pod_ip": "X-Pod-IP",
    "node": "X-Node-Name",
    "conn_id": "X-Conn-Id",
    "conn_request": "X-Conn-Request",
    "conn_age_ms": "X-Conn-Age-Ms",
    "client_addr": "X-Client-Addr",
}


@pytest.mark.parametrize("path", ["/", "/some/deep/path?x=1", "/healthz", "/metrics"])
def test_every_path_is_the_echo_with_identity_in_headers_and_body(echo: EchoProcess, path: str) -> None:
    connection = client(echo)
    reply = get(connection, path)
    local = "{}:{}".format(*connection.sock.getsockname())

    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.body == {
        "pod": "echo-test-0",
        "pod_ip": "10.244.0.7",
        "node": "node-a",
        "conn_id": reply.conn_id,
        "conn_request": 1,
        "conn_age_ms": int(reply.headers["X-Conn-Age-Ms"]),
        "client_addr": local,
    }
    for field, header in IDENTITY_FIELDS.items():
        assert reply.headers[header] == str(reply.body[field])


def test_identity_falls_back_to_hostname_and_the_address_the_client_reached(start_echo) -> None:
    echo = start_echo(env={"POD_NAME": "", "POD_IP": "", "NODE_NAME": ""})

    reply = get(client(echo))

    assert (reply.body["pod"], reply.body["pod_ip"], reply.body["node"]) == (
        socket.gethostname(),
        "127.0.0.1",
        socket.gethostname(),
    )


def test_one_kept_alive_connection_has_one_id_and_counts_its_requests(echo: EchoProcess) -> None:
    connection = client(echo)
    replies = [get(connection) for _ in range(25)]

    assert {reply.conn_id for reply in replies} == {replies[0].conn_id}
    assert [reply.conn_request for reply in replies] == list(range(1, 26))
    ages = [int(reply.headers["X-Conn-Age-Ms"]) for reply in replies]
    assert ages == sorted(ages)
    assert not any(reply.closes for reply in replies)


def test_many_connections_get_distinct_ids_and_their_own_indices(echo: EchoProcess) -> None:
    connections = [client(echo) for _ in range(6)]
    seen: dict[int, list[int]] = {}
    client_addrs: dict[int, str] = {}
    for _round in range(4):
        for connection in connections:  # interleaved: indices must be per connection, not per process
            reply = get(connection)
            seen.setdefault(reply.conn_id, []).append(reply.conn_request)
            client_addrs[reply.conn_id] = str(reply.body["client_addr"])

    assert len(seen) == 6
    assert all(indices == [1, 2, 3, 4] for indices in seen.values())
    assert len(set(client_addrs.values())) == 6
    assert sorted(seen) == list(range(min(seen), min(seen) + 6))  # one per-process counter


def test_connection_ids_are_never_reused(echo: EchoProcess) -> None:
    ids = []
    for _ in range(5):
        connection = client(echo)
        ids.append(get(connection).conn_id)
        connection.close()
    assert ids == sorted(set(ids))
    assert ids[0] >= 1


def test_max_requests_per_connection_10_over_100_requests_is_exactly_10_connections(start_echo) -> None:
    echo = start_echo("--max-requests-per-connection", "10")
    connection = client(echo)  # reconnects only because the server closed

    replies = [get(connection) for _ in range(100)]

    assert len({reply.conn_id for reply in replies}) == 10
    assert [reply.conn_request for reply in replies] == list(range(1, 11)) * 10
    assert [reply.closes for reply in replies] == ([False] * 9 + [True]) * 10
    metrics = scrape(echo)
    assert metrics["echo_connections_opened_total"] == 10
    assert metrics['echo_requests_total{status="200"}'] == 100


def test_the_server_really_closes_after_the_crossing_response(start_echo) -> None:
    echo = start_echo("--max-requests-per-connection", "2")
    sock = raw_socket(echo)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    first = sock.recv(65536)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")

    rest = read_until_closed(sock)  # returns only on the server's FIN

    [(status, headers, _body)] = split_responses(rest)
    assert b"Connection: close" not in first
    assert (status, headers["Connection"], headers["X-Conn-Request"]) == (200, "close", "2")


@pytest.mark.parametrize(
    ("jitter", "least_ms", "most_ms"),
    [("0", 1000, 1600), ("0.3", 700, 1900)],
)
def test_max_connection_age_closes_on_the_first_response_past_the_age(
    start_echo, jitter: str, least_ms: int, most_ms: int
) -> None:
    echo = start_echo("--max-connection-age", "1s", "--max-connection-age-jitter", jitter)
    connection = client(echo)
    replies = []
    end = time.monotonic() + 3.5
    while time.monotonic() < end:  # steady sequential requests, every 20 ms
        replies.append(get(connection))
        time.sleep(0.02)

    connections = sorted({reply.conn_id for reply in replies})
    crossing = [i for i, reply in enumerate(replies) if reply.closes]
    assert abs(len(connections) - 4) <= 1
    assert len(crossing) in (len(connections) - 1, len(connections))
    for i in crossing:  # the first response at or past the (jittered) age closes, the one before did not
        assert least_ms <= int(replies[i].headers["X-Conn-Age-Ms"]) <= most_ms
        if i + 1 < len(replies):
            assert replies[i + 1].conn_request == 1  # the next request went out on a new connection
    if jitter == "0":
        assert all(int(replies[i - 1].headers["X-Conn-Age-Ms"]) < 1000 for i in crossing)


def test_idle_timeout_closes_an_idle_kept_alive_connection_but_not_a_busy_one(start_echo) -> None:
    echo = start_echo("--idle-timeout", "500ms")
    idle = raw_socket(echo)
    answers = []
    for _ in range(2):  # 200 ms apart: under the timeout, so the second finds the connection open
        idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answers += split_responses(idle.recv(65536))
        time.sleep(0.2)
    busy = client(echo)
    busy_ids = set()
    for _ in range(12):  # 1.2 s of requests 100 ms apart: never idle for 500 ms
        busy_ids.add(get(busy).conn_id)
        time.sleep(0.1)

    assert [headers["X-Conn-Request"] for _, headers, _ in answers] == ["1", "2"]
    assert read_until_closed(idle) == b""  # idle for over 1 s by now: closed by the server
    assert len(busy_ids) == 1


def test_without_idle_timeout_a_kept_alive_connection_stays_open(echo: EchoProcess) -> None:
    connection = client(echo)
    first = get(connection)
    time.sleep(1.0)
    assert get(connection).conn_id == first.conn_id


def test_injected_latency_shows_in_measured_latency_and_changes_at_run_time(start_echo) -> None:
    echo = start_echo("--latency", "150ms", "--latency-jitter", "20ms")
    connection = client(echo)
    get(connection)

    def median_latency() -> float:
        samples = []
        for _ in range(5):
            started = time.perf_counter()
            get(connection)
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    slow = median_latency()
    status, _ = admin(echo, "/admin/faults", "PUT", {"latency_ms": 0, "latency_jitter_ms": 0})
    fast = median_latency()

    assert status == 200
    assert slow >= 0.13
    assert fast < slow - 0.1


@pytest.mark.parametrize("rate", [0.0, 0.25, 1.0])
def test_error_rate_is_honoured_within_statistical_bounds(start_echo, rate: float) -> None:
    echo = start_echo("--error-rate", str(rate))
    connection = client(echo)
    n = 400

    replies = [get(connection) for _ in range(n)]
    errors = sum(reply.status == 503 for reply in replies)

    sigma = math.sqrt(n * rate * (1 - rate))
    assert abs(errors - n * rate) <= 5 * sigma  # exact for 0 and 1
    assert {reply.status for reply in replies} <= {200, 503}
    # a 503 still says who answered, so errors can be attributed to a pod
    assert all(reply.body["pod"] == "echo-test-0" for reply in replies)
    assert len({reply.conn_id for reply in replies}) == 1


def test_cpu_ms_burns_cpu_in_the_server(start_echo) -> None:
    echo = start_echo("--cpu-ms", "25")
    before = scrape(echo)["process_cpu_seconds_total"]
    connection = client(echo)
    for _ in range(20):
        get(connection)
    burnt = scrape(echo)["process_cpu_seconds_total"] - before
    assert burnt >= 0.45  # 20 × 25 ms, minus clock-tick rounding


def test_pipelined_requests_are_answered_in_order_even_with_jittered_latency(start_echo) -> None:
    echo = start_echo("--latency", "30ms", "--latency-jitter", "29ms")
    sock = raw_socket(echo)
    sock.sendall(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" * 20
        + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )

    responses = split_responses(read_until_closed(sock))

    assert [int(headers["X-Conn-Request"]) for _, headers, _ in responses] == list(range(1, 22))
    assert responses[-1][1]["Connection"] == "close"


@pytest.mark.parametrize(
    ("request_bytes", "expect_statuses"),
    [
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", [200]),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", [200]),
        (b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", [200]),
    ],
    ids=["content-length", "chunked", "head"],
)
def test_request_framing_keeps_the_connection_usable(
    echo: EchoProcess, request_bytes: bytes, expect_statuses: list[int]
) -> None:
    sock = raw_socket(echo)
    sock.sendall(request_bytes + b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")

    data = read_until_closed(sock)
    if request_bytes.startswith(b"HEAD"):  # no body after the HEAD response, despite its Content-Length
        head, _, rest = data.partition(b"\r\n\r\n")
        assert b"Content-Length:" in head
        data = rest
        expect_statuses = []
    responses = split_responses(data)

    assert [status for status, _, _ in responses] == [*expect_statuses, 200]
    assert responses[-1][1]["X-Conn-Request"] == "2"


def test_expect_100_continue_is_answered_before_the_body(echo: EchoProcess) -> None:
    sock = raw_socket(echo)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(b"abc" + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    responses = split_responses(read_until_closed(sock))
    assert [(status, headers["X-Conn-Request"]) for status, headers, _ in responses] == [
        (200, "1"),
        (200, "2"),
    ]


def test_a_large_body_is_drained_and_answered(echo: EchoProcess) -> None:
    body = b"x" * 3_000_000
    sock = raw_socket(echo)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
    sock.sendall(body)
    [(status, headers, _)] = split_responses(read_until_closed(sock))
    assert (status, headers["Connection"]) == (200, "close")


@pytest.mark.parametrize(
    ("request_line", "connection_header"),
    [
        (b"GET / HTTP/1.0\r\n\r\n", "close"),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "keep-alive"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "close"),
    ],
)
def test_the_clients_keep_alive_wish_is_honoured(
    echo: EchoProcess, request_line: bytes, connection_header: str
) -> None:
    sock = raw_socket(echo)
    sock.sendall(request_line)
    sock.settimeout(2)
    data = sock.recv(65536)
    [(status, headers, _)] = split_responses(data)
    assert (status, headers["Connection"]) == (200, connection_header)
    if connection_header == "close":
        assert read_until_closed(sock) == b""


def test_a_malformed_request_gets_400_and_a_closed_connection(echo: EchoProcess) -> None:
    sock = raw_socket(echo)
    sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    [(status, headers, _)] = split_responses(read_until_closed(sock))
    assert (status, headers["Connection"]) == (400, "close")
    assert scrape(echo)['echo_requests_total{status="400"}'] == 1


def test_nothing_is_answered_after_the_closing_response_of_a_pipelined_burst(start_echo) -> None:
    echo = start_echo("--max-requests-per-connection", "3")
    sock = raw_socket(echo)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 8)  # one write: the server parses all 8 at once

    responses = split_responses(read_until_closed(sock))

    assert [headers["X-Conn-Request"] for _, headers, _ in responses] == ["1", "2", "3"]
    assert responses[-1][1]["Connection"] == "close"
    assert scrape(echo)['echo_requests_total{status="200"}'] == 3


def test_the_pure_python_parser_fallback_serves_the_same_contract(start_echo) -> None:
    """aiohttp without its C extensions (AIOHTTP_NO_EXTENSIONS=1) must still frame requests right."""
    echo = start_echo(env={"AIOHTTP_NO_EXTENSIONS": "1"})
    sock = raw_socket(echo)
    sock.sendall(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    responses = split_responses(read_until_closed(sock))
    assert [(status, headers["X-Conn-Request"]) for status, headers, _ in responses] == [
        (200, "1"),
        (200, "2"),
    ]
