"""The admin port: probes, Prometheus metrics and run-time knobs, kept off the benchmark path.

Nothing here counts as an echo request. Endpoints:

    GET  /healthz        200 "ok" while the process runs
    GET  /readyz         200 when ready, 503 when not (flipped by /admin/ready, off while draining)
    GET  /metrics        Prometheus text format (prometheus-client)
    GET  /admin/ready    {"ready": true}
    POST /admin/ready    {"ready": false}  → the resulting {"ready": …}
    GET  /admin/faults   {"latency_ms": 0, "latency_jitter_ms": 0, "error_rate": 0, "cpu_ms": 0}
    PUT  /admin/faults   any subset of those keys → the resulting full object
    GET  /admin/policy   the connection policy: {"max_requests_per_connection": null, …}
    PUT  /admin/policy   any subset of its keys (null = off) → the resulting full object; new connections
                         take it (a connection keeps the age limit drawn when it opened)
    POST /admin/freeze   the pod is about to be killed: stop reading and answering, wait (≤ 2 s) until the
                         clients acknowledged every response written, → {"requests_total": N, "requests": …}
    POST /admin/drain    {"timeout_s": 5}: unready, close idle connections, answer in-flight requests with
                         ``Connection: close``; when all are closed (or at the timeout, frozen) → the counts

freeze and drain answer with the final counters, so a pod that dies next is still accounted for exactly.

    $ curl -X PUT -d '{"latency_ms": 50}' http://127.0.0.1:8081/admin/faults
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from workloads.echo.config import ConfigError
from workloads.echo.protocol import EchoState
from workloads.echo.stats import REQUESTS_PER_CONNECTION_BUCKETS

_STATE = web.AppKey("state", EchoState)
_REGISTRY = web.AppKey("registry", CollectorRegistry)


class EchoCollector(Collector):
    """Renders ``EchoStats`` and the live knobs as Prometheus metric families at scrape time."""

    def __init__(self, state: EchoState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state
        stats = state.stats
        requests = CounterMetricFamily(
            "echo_requests", "Echo requests answered, by HTTP status (probes excluded).", labels=["status"]
        )
        for status, count in sorted(stats.requests.items()):
            requests.add_metric([str(status)], count)
        yield requests
        yield CounterMetricFamily(
            "echo_connections_opened",
            "Connections accepted on the echo port.",
            value=stats.connections_opened,
        )
        yield CounterMetricFamily(
            "echo_connections_closed", "Connections closed on the echo port.", value=stats.connections_closed
        )
        yield GaugeMetricFamily(
            "echo_connections_active", "Connections open on the echo port.", value=stats.connections_active
        )
        yield CounterMetricFamily(
            "echo_tls_handshakes", "TLS handshakes completed on the echo port.", value=stats.tls_handshakes
        )
        by_protocol = CounterMetricFamily(
            "echo_protocol_connections",
            "Connections by protocol: http/1.1 (plaintext or TLS) or h2 (prior knowledge or ALPN).",
            labels=["protocol"],
        )
        for protocol, count in sorted(stats.connections_by_protocol.items()):
            by_protocol.add_metric([protocol], count)
        yield by_protocol
        yield CounterMetricFamily(
            "echo_grpc_calls", "gRPC calls answered (also counted in echo_requests).", value=stats.grpc_calls
        )
        yield CounterMetricFamily(
            "echo_goaways", "HTTP/2 connections the server ended with GOAWAY.", value=stats.goaways
        )
        yield CounterMetricFamily(
            "echo_streams_refused",
            "HTTP/2 streams refused after the server's GOAWAY (the client retries them).",
            value=stats.streams_refused,
        )
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip(
            (*map(float, REQUESTS_PER_CONNECTION_BUCKETS), float("inf")),
            stats.requests_per_connection_buckets,
            strict=True,
        ):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
        yield HistogramMetricFamily(
            "echo_requests_per_connection",
            "Requests answered per connection, observed when the connection closes.",
            buckets=buckets,
            sum_value=stats.requests_per_connection_sum,
        )
        yield GaugeMetricFamily("echo_ready", "1 when /readyz answers 200.", value=1 if state.ready else 0)
        info = GaugeMetricFamily("echo_info", "Identity of this echo pod.", labels=["pod", "pod_ip", "node"])
        info.add_metric([state.identity.pod, state.identity.pod_ip or "", state.identity.node], 1)
        yield info
        faults = GaugeMetricFamily("echo_fault", "Current fault injection knobs.", labels=["knob"])
        for knob, value in state.faults.as_dict().items():
            faults.add_metric([knob], value)
        yield faults


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data) + "\n", status=status, content_type="application/json")


async def _read_object(request: web.Request) -> dict[str, object]:
    try:
        body = json.loads(await request.read() or b"null")
    except ValueError as exc:
        raise ConfigError(f"request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ConfigError("request body must be a JSON object")
    return body


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    if request.app[_STATE].ready:
        return web.Response(text="ready\n")
    return web.Response(text="not ready\n", status=503)


async def _metrics(request: web.Request) -> web.Response:
    # the scraper's Accept header picks the format (Prometheus text, or OpenMetrics when asked for)
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encode(request.app[_REGISTRY]), headers={"Content-Type": content_type})


async def _get_ready(request: web.Request) -> web.Response:
    return _json({"ready": request.app[_STATE].ready})


async def _set_ready(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    try:
        body = await _read_object(request)
        if set(body) != {"ready"} or not isinstance(body["ready"], bool):
            raise ConfigError('send {"ready": true} or {"ready": false}')
        if state.draining and body["ready"]:
            raise ConfigError("the server is shutting down and cannot become ready again")
    except ConfigError as exc:
        return _json({"error": str(exc)}, status=400)
    state.ready = body["ready"]
    return _json({"ready": state.ready})


async def _get_faults(request: web.Request) -> web.Response:
    return _json(request.app[_STATE].faults.as_dict())


async def _put_faults(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    try:
        state.faults = state.faults.updated(await _read_object(request))
    except ConfigError as exc:
        return _json({"error": str(exc)}, status=400)
    return _json(state.faults.as_dict())


async def _get_policy(request: web.Request) -> web.Response:
    return _json(request.app[_STATE].policy.as_dict())


async def _put_policy(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    try:
        state.policy = state.policy.updated(await _read_object(request))
    except ConfigError as exc:
        return _json({"error": str(exc)}, status=400)
    return _json(state.policy.as_dict())


FREEZE_ACK_TIMEOUT = 2.0
"""Seconds a freeze waits for clients to acknowledge the responses already written."""


def _final_counts(state: EchoState) -> dict[str, object]:
    requests = dict(state.stats.requests)
    return {
        "requests_total": sum(requests.values()),
        "requests": {str(k): v for k, v in sorted(requests.items())},
    }


async def _await_acknowledged(state: EchoState, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(c.unacknowledged() for c in list(state.connections)) and loop.time() < deadline:
        await asyncio.sleep(0.005)


async def _freeze_now(state: EchoState) -> None:
    state.frozen = True
    state.ready = False
    for connection in list(state.connections):
        connection.freeze()
    await _await_acknowledged(state, FREEZE_ACK_TIMEOUT)


async def _freeze(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    await _freeze_now(state)
    return _json(_final_counts(state))


async def _drain(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    try:
        body = await _read_object(request)
        timeout = body.get("timeout_s", 5.0)
        if set(body) - {"timeout_s"} or isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise ConfigError('send {"timeout_s": SECONDS}')
        if not 0 < timeout <= 300:
            raise ConfigError("timeout_s must be within (0, 300]")
    except ConfigError as exc:
        return _json({"error": str(exc)}, status=400)
    state.ready = False
    state.draining = True
    state.all_closed = asyncio.Event()
    for connection in list(state.connections):
        connection.drain()
    if state.connections:
        try:
            await asyncio.wait_for(state.all_closed.wait(), timeout=float(timeout))
        except TimeoutError:
            await _freeze_now(state)
    return _json(_final_counts(state))


def admin_app(state: EchoState) -> web.Application:
    """The admin port's aiohttp application for one echo process.

    runner = web.AppRunner(admin_app(state), access_log=None)
    """
    # auto_describe would collect every family once at registration, to check for duplicate names: ~0.6 ms
    # per pod, which an echo host serving a thousand pods pays a thousand times for nothing.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EchoCollector(state))
    # process_cpu_seconds_total etc.: lets a scenario cross-check a pod's CPU use (the cpu_ms knob)
    ProcessCollector(registry=registry)
    app = web.Application()
    app[_STATE] = state
    app[_REGISTRY] = registry
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/admin/ready", _get_ready)
    app.router.add_post("/admin/ready", _set_ready)
    app.router.add_get("/admin/faults", _get_faults)
    app.router.add_put("/admin/faults", _put_faults)
    app.router.add_get("/admin/policy", _get_policy)
    app.router.add_put("/admin/policy", _put_policy)
    app.router.add_post("/admin/freeze", _freeze)
    app.router.add_post("/admin/drain", _drain)
    return app
