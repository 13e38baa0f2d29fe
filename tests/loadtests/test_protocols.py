"""TLS, HTTP/2 and gRPC clients against a real echo server: connections, streams and handshakes counted."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest

from balancebench.certs import Certificates, make_certificates
from loadtests.client import PolicyClient, TlsClient
from loadtests.drivers import ConnectionIds
from loadtests.grpcclient import GrpcClient
from loadtests.h2client import H2Client
from loadtests.policy import PolicyError, parse_policy
from loadtests.protocols import TLS_SERVER_NAME, check_protocol
from tests.loadtests.conftest import echo_metrics, run_locust
from workloads.echo.process import EchoProcess


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


def _echo(certs: Certificates, *args: str) -> EchoProcess:
    return EchoProcess(
        ["--tls-cert", str(certs.cert), "--tls-key", str(certs.key), *args], env={"POD_NAME": "e"}
    )


@pytest.fixture
def echo(certs: Certificates) -> Iterator[EchoProcess]:
    with _echo(certs) as server:
        yield server


def _url(echo: EchoProcess) -> str:
    return f"http://127.0.0.1:{echo.port}"


def _join(greenlets: list[gevent.Greenlet], timeout: float) -> None:
    """Wait until every greenlet has finished or ``timeout`` passed.

    ``gevent.joinall`` in the main greenlet can return early when something an earlier test left behind
    switches into it (seen after ~200 other tests in one process: it returned after 2 ms), so it is asked
    again until the deadline."""
    deadline = time.monotonic() + timeout
    while not all(g.ready() for g in greenlets) and time.monotonic() < deadline:
        gevent.joinall(greenlets, timeout=deadline - time.monotonic())


def _tls(certs: Certificates) -> TlsClient:
    return TlsClient(ca_file=str(certs.ca), server_name=TLS_SERVER_NAME)


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "h2-tls"])
def test_h2_client_carries_concurrent_requests_on_one_connection(
    echo: EchoProcess, certs: Certificates, tls: bool
) -> None:
    client = H2Client(_url(echo), parse_policy("keepalive"), next_id=itertools.count(1).__next__,
                      tls=_tls(certs) if tls else None)  # fmt: skip
    greenlets = [gevent.spawn(client.request, "/") for _ in range(12)]
    _join(greenlets, 60)
    exchanges = [g.value for g in greenlets]
    client.close()
    assert all(g.successful() for g in greenlets), [g.exception for g in greenlets]
    assert all(e.status == 200 and e.error == "" for e in exchanges)
    assert {e.server_conn for e in exchanges} == {1}
    assert sorted(e.stream_id for e in exchanges) == list(range(1, 24, 2))
    assert sorted(e.conn_request for e in exchanges) == list(range(1, 13))
    metrics = echo_metrics(echo)
    assert metrics["echo_protocol_connections_total"] == metrics["echo_connections_opened_total"] == 1
    assert metrics["echo_tls_handshakes_total"] == (1 if tls else 0)
    assert metrics["echo_requests_total"] == 12


def test_h2_max_streams_opens_another_connection_only_when_each_is_full(echo: EchoProcess) -> None:
    client = H2Client(_url(echo), parse_policy("max-streams=4"), next_id=itertools.count(1).__next__)
    greenlets = [gevent.spawn(client.request, "/") for _ in range(12)]
    _join(greenlets, 30)
    client.close()
    assert all(g.value.status == 200 for g in greenlets)
    assert len({g.value.server_conn for g in greenlets}) == 3
    assert client.opened_total == 3


def test_h2_server_max_requests_sends_goaway_and_nothing_fails(certs: Certificates) -> None:
    with _echo(certs, "--max-requests-per-connection", "5") as echo:
        client = H2Client(_url(echo), parse_policy("keepalive"), next_id=itertools.count(1).__next__)
        exchanges = [client.request("/") for _ in range(20)]
        client.close()
        metrics = echo_metrics(echo)
    assert all(e.status == 200 and e.error == "" for e in exchanges)
    assert [e.server_conn for e in exchanges] == [n for n in (1, 2, 3, 4) for _ in range(5)]
    assert metrics["echo_goaways_total"] == 4


def test_h2_client_follows_the_servers_max_age_goaway_without_a_failed_request(certs: Certificates) -> None:
    # four greenlets keep streams in flight while the server ends each connection at 200 ms (two-phase
    # GOAWAY); they stop once three connections served them (bounded: at most 2,000 requests each)
    with _echo(certs, "--max-connection-age", "200ms") as echo:
        client = H2Client(_url(echo), parse_policy("keepalive"), next_id=itertools.count(1).__next__)
        results: list = []

        def caller() -> None:
            for _ in range(2000):
                results.append(client.request("/"))
                if len({e.server_conn for e in results}) >= 3:
                    return

        greenlets = [gevent.spawn(caller) for _ in range(4)]
        _join(greenlets, 60)
        client.close()
        metrics = echo_metrics(echo)
    assert all(g.successful() for g in greenlets), [g.exception for g in greenlets]
    assert [e.error for e in results if e.error] == []
    assert len({e.server_conn for e in results}) >= 3
    assert metrics["echo_requests_total"] == len(results)


def test_grpc_channel_carries_concurrent_calls_on_one_connection(echo: EchoProcess) -> None:
    client = GrpcClient(_url(echo), parse_policy("grpc"), ids=ConnectionIds())
    results = []
    threads = [threading.Thread(target=lambda: results.append(client.request("/"))) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    client.close()
    assert len(results) == 10
    assert all(e.status == 200 and e.error == "" for e in results)
    assert {e.server_conn for e in results} == {1}
    assert len({e.stream_id for e in results}) == 10
    metrics = echo_metrics(echo)
    assert metrics["echo_connections_opened_total"] == 1
    assert metrics["echo_grpc_calls_total"] == 10


def test_server_max_age_goaway_moves_grpc_to_new_connections_without_a_failed_call(
    certs: Certificates,
) -> None:
    # four callers keep calls in flight while the server ends each connection at 200 ms; they stop once
    # three connections served them (bounded: at most 2,000 calls each)
    with _echo(certs, "--max-connection-age", "200ms") as echo:
        client = GrpcClient(_url(echo), parse_policy("grpc"), ids=ConnectionIds())
        results: list = []

        def caller() -> None:
            for _ in range(2000):
                results.append(client.request("/"))
                if len({e.server_conn for e in results}) >= 3:
                    return

        threads = [threading.Thread(target=caller) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        client.close()
        metrics = echo_metrics(echo)
    assert [e.error for e in results if e.error] == []
    connections = {e.server_conn for e in results}
    assert len(connections) >= 3
    assert metrics["echo_goaways_total"] >= len(connections) - 1
    assert metrics["echo_requests_total"] == len(results)


@pytest.mark.parametrize(("policy", "handshakes"), [("per-request", 15), ("keepalive", 1)])
def test_tls_handshakes_are_counted_exactly(
    echo: EchoProcess, certs: Certificates, policy: str, handshakes: int
) -> None:
    tls = _tls(certs)
    client = PolicyClient(_url(echo), parse_policy(policy), next_id=itertools.count(1).__next__, tls=tls)
    exchanges = [client.request("/") for _ in range(15)]
    client.close()
    assert all(e.status == 200 for e in exchanges)
    assert tls.handshakes == handshakes
    assert sum(1 for e in exchanges if e.tls_ms > 0) == handshakes
    assert sum(1 for e in exchanges if e.connect_ms > 0) == handshakes
    metrics = echo_metrics(echo)
    assert metrics["echo_tls_handshakes_total"] == handshakes
    assert metrics["echo_connections_opened_total"] == handshakes


def test_plaintext_and_tls_share_the_port_and_the_counters(echo: EchoProcess, certs: Certificates) -> None:
    ids = itertools.count(1).__next__
    plain = PolicyClient(_url(echo), parse_policy("keepalive"), next_id=ids)
    secure = PolicyClient(_url(echo), parse_policy("keepalive"), next_id=ids, tls=_tls(certs))
    answers = [plain.request("/"), secure.request("/"), plain.request("/")]
    plain.close()
    secure.close()
    assert [(a.server_conn, a.conn_request) for a in answers] == [(1, 1), (2, 1), (1, 2)]
    assert echo_metrics(echo)["echo_tls_handshakes_total"] == 1


def test_an_untrusted_certificate_is_a_connect_error(echo: EchoProcess, tmp_path: Path) -> None:
    other = make_certificates(tmp_path / "other")
    client = PolicyClient(_url(echo), parse_policy("keepalive"), next_id=itertools.count(1).__next__,
                          tls=TlsClient(ca_file=str(other.ca), server_name=TLS_SERVER_NAME))  # fmt: skip
    exchange = client.request("/")
    assert (exchange.status, exchange.error) == (0, "connect")


@pytest.mark.parametrize(
    ("protocol", "policy", "message"),
    [
        (
            "grpc",
            "max-age=30s",
            "protocol grpc: the client has no max-age; use the server's max_connection_age",
        ),
        ("grpc", "grpc-rr", "lb=round_robin needs the endpoints of a headless Service"),
        ("h2", "per-request", "protocol h2: the client has no keepalive"),
        ("http1", "max-streams=4", "protocol http1: the client has no max-streams"),
        ("http1-tls", "lb=round_robin", "protocol http1-tls: the client has no lb"),
        ("quic", "keepalive", "unknown protocol 'quic': choose one of http1, http1-tls, h2, h2-tls, grpc"),
    ],
)
def test_options_a_protocol_lacks_are_refused(protocol: str, policy: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        check_protocol(protocol, parse_policy(policy))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("protocol", "policy", "connections"),
    [("http1-tls", "per-request", 40), ("http1-tls", "keepalive", 2), ("h2-tls", "keepalive,scope=source", 1),
     ("grpc", "grpc", 1)],
)  # fmt: skip
def test_locust_records_every_request_of_each_protocol(
    echo: EchoProcess, certs: Certificates, tmp_path: Path, protocol: str, policy: str, connections: int
) -> None:
    # real Locust (gevent-patched): 2 users × 20 requests each, the records say what the servers counted
    args = ["--protocol", protocol, "--tls-ca", str(certs.ca), "--stop-after-requests", "40"]
    run = run_locust(echo, tmp_path / "records", policy=policy, users=2, args=args)
    assert len(run.rows) == run.server_requests == 40, run.output[-2000:]
    assert {r["protocol"] for r in run.rows} == {protocol}
    assert all(r["status"] == 200 and r["error"] == "" for r in run.rows)
    assert run.server_connections == connections
    tls = echo_metrics(echo)["echo_tls_handshakes_total"]
    assert sum(1 for r in run.rows if r["tls_ms"] > 0) == (connections if protocol != "grpc" else 0) == tls
