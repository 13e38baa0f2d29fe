"""The admin port against a real server: probes, readiness flips, fault knobs and /metrics totals."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from tests.workloads.echo.support import admin, client, get, scrape
from workloads.echo.process import EchoProcess


def test_metrics_totals_equal_the_requests_sent_and_probes_never_count(start_echo) -> None:
    echo = start_echo("--error-rate", "0.2")
    plan = [3, 7, 1, 12]  # requests per client connection
    statuses: list[int] = []
    for count in plan:
        connection = client(echo)
        statuses += [get(connection).status for _ in range(count)]
        connection.close()
    for path in ("/healthz", "/readyz", "/admin/faults", "/admin/ready", "/metrics"):
        admin(echo, path)

    deadline = time.monotonic() + 5
    while (metrics := scrape(echo))["echo_connections_active"] and time.monotonic() < deadline:
        time.sleep(0.02)  # the server sees the client's FIN a moment later

    assert metrics['echo_requests_total{status="200"}'] == statuses.count(200)
    assert metrics['echo_requests_total{status="503"}'] == statuses.count(503)
    assert statuses.count(200) + statuses.count(503) == sum(plan)
    assert metrics["echo_connections_opened_total"] == len(plan)
    assert metrics["echo_connections_closed_total"] == len(plan)
    assert metrics["echo_connections_active"] == 0
    assert metrics["echo_requests_per_connection_count"] == len(plan)
    assert metrics["echo_requests_per_connection_sum"] == sum(plan)
    assert metrics['echo_requests_per_connection_bucket{le="1.0"}'] == 1
    assert metrics['echo_requests_per_connection_bucket{le="5.0"}'] == 2
    assert metrics['echo_requests_per_connection_bucket{le="10.0"}'] == 3
    assert metrics['echo_requests_per_connection_bucket{le="+Inf"}'] == 4
    assert metrics['echo_info{node="node-a",pod="echo-test-0",pod_ip="10.244.0.7"}'] == 1


def test_active_connections_are_counted_while_open(echo: EchoProcess) -> None:
    connections = [client(echo) for _ in range(3)]
    for connection in connections:
        get(connection)
    metrics = scrape(echo)
    assert (metrics["echo_connections_active"], metrics["echo_connections_opened_total"]) == (3, 3)


def test_readiness_flips_off_and_on_without_touching_health(echo: EchoProcess) -> None:
    assert admin(echo, "/readyz") == (200, "ready\n")
    assert admin(echo, "/admin/ready", "POST", {"ready": False}) == (200, '{"ready": false}\n')
    assert admin(echo, "/readyz") == (503, "not ready\n")
    assert admin(echo, "/healthz") == (200, "ok\n")
    assert scrape(echo)["echo_ready"] == 0
    assert get(client(echo)).status == 200  # readiness is for the endpoints controller, not the echo
    assert admin(echo, "/admin/ready", "POST", {"ready": True})[0] == 200
    assert admin(echo, "/readyz")[0] == 200


def test_not_ready_flag_starts_unready(start_echo) -> None:
    echo = start_echo("--not-ready")
    assert admin(echo, "/readyz")[0] == 503
    assert admin(echo, "/admin/ready") == (200, '{"ready": false}\n')


def test_faults_get_and_partial_put_answer_the_full_object(start_echo) -> None:
    echo = start_echo("--latency", "5ms")
    status, text = admin(echo, "/admin/faults")
    assert (status, json.loads(text)) == (
        200,
        {"latency_ms": 5.0, "latency_jitter_ms": 0.0, "error_rate": 0.0, "cpu_ms": 0.0},
    )

    status, text = admin(echo, "/admin/faults", "PUT", {"error_rate": 1})

    assert (status, json.loads(text)) == (
        200,
        {"latency_ms": 5.0, "latency_jitter_ms": 0.0, "error_rate": 1.0, "cpu_ms": 0.0},
    )
    assert get(client(echo)).status == 503
    assert scrape(echo)['echo_fault{knob="error_rate"}'] == 1


@pytest.mark.parametrize(
    ("path", "method", "body", "message"),
    [
        ("/admin/faults", "PUT", {"error_rate": 1.5}, "error_rate is a probability between 0 and 1"),
        ("/admin/faults", "PUT", {"latency_ms": -1}, "latency_ms must not be negative"),
        ("/admin/faults", "PUT", {"latency": 5}, "unknown fault latency"),
        ("/admin/faults", "PUT", {"cpu_ms": "lots"}, "cpu_ms must be a finite number"),
        ("/admin/faults", "PUT", [1], "request body must be a JSON object"),
        ("/admin/ready", "POST", {"ready": "no"}, 'send {"ready": true} or {"ready": false}'),
    ],
)
def test_bad_admin_requests_are_400_with_a_reason_and_change_nothing(
    echo: EchoProcess, path: str, method: str, body: object, message: str
) -> None:
    before = admin(echo, "/admin/faults"), admin(echo, "/admin/ready")
    status, text = admin(echo, path, method, body)
    assert status == 400
    assert message in json.loads(text)["error"]
    assert (admin(echo, "/admin/faults"), admin(echo, "/admin/ready")) == before


@pytest.mark.parametrize(
    ("accept", "content_type", "counter_type_line"),
    [
        ("", "text/plain", "# TYPE echo_requests_total counter"),
        (
            "application/openmetrics-text; version=1.0.0",
            "application/openmetrics-text",
            "# TYPE echo_requests counter",
        ),
    ],
)
def test_metrics_speak_the_format_the_scraper_asks_for(
    echo: EchoProcess, accept: str, content_type: str, counter_type_line: str
) -> None:
    request = urllib.request.Request(echo.admin_url + "/metrics", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=10) as response:
        answered_type = response.headers["Content-Type"]
        text = response.read().decode()
    assert answered_type.startswith(content_type)
    assert counter_type_line in text.splitlines()
    assert "# TYPE echo_requests_per_connection histogram" in text
