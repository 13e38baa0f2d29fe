"""A gRPC client on a grpcio channel: unary calls to the echo's ``balancebench.Echo/Echo``.

The channel's own load-balancing policy decides where calls go: ``pick_first`` (gRPC's default) keeps one
connection to the first address that answers; ``round_robin`` keeps one to every address the target lists
and takes them in turn. Behind a ClusterIP that is one address, so either way one connection, one pod, until
the server ends it (GOAWAY at its max connection age), when the channel reconnects and the dataplane may
pick another pod. Over a headless Service's endpoints (the pod addresses), round_robin spreads calls evenly.

Each channel has its own subchannel pool (``grpc.use_local_subchannel_pool``): grpcio otherwise shares
connections between channels of a process, and two "clients" would secretly be one. The pod, connection
and stream that answered come from the echo's response metadata; grpcio does not say which of its
connections carried a call, so ``client_conn`` is derived from the server's connection identity.

Locust workers are gevent-monkeypatched, and grpcio blocks gevent's hub unless told to cooperate: the
first client calls ``grpc.experimental.gevent.init_gevent()`` (before any channel exists).

    client = GrpcClient("http://10.96.0.10:80", parse_policy("grpc"), ids=ConnectionIds())
    exchange = client.request("/")
    client.close()
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from loadtests.client import NETWORK_TIMEOUT, Exchange, RequestFailed, parse_base_url
from loadtests.policy import PoolPolicy

GRPC_UNARY = "/balancebench.Echo/Echo"
"""The echo's unary method (see workloads/echo/http2.py; the client must not import workloads)."""

_gevent_ready = False

_STATUS_KINDS = {
    "UNAVAILABLE": "reset",
    "DEADLINE_EXCEEDED": "timeout",
    "INTERNAL": "protocol",
    "UNKNOWN": "protocol",
}


def use_gevent() -> None:
    """Make grpcio cooperate with gevent once per process, when gevent's monkey-patching is active."""
    global _gevent_ready
    if _gevent_ready:
        return
    import gevent.monkey

    if gevent.monkey.is_module_patched("socket"):
        from grpc.experimental import gevent as grpc_gevent

        grpc_gevent.init_gevent()
    _gevent_ready = True


class GrpcClient:
    """One grpcio channel to the Service address or to a headless Service's endpoints."""

    protocol = "grpc"

    def __init__(
        self,
        base_url: str,
        policy: PoolPolicy,
        *,
        ids: Any,
        endpoints: Sequence[tuple[str, int]] = (),
        timeout: float = NETWORK_TIMEOUT,
    ) -> None:
        use_gevent()
        import grpc

        self._grpc = grpc
        self._ids = ids
        self._timeout = timeout
        host, port = parse_base_url(base_url)
        addresses = list(endpoints) or [(host, port)]
        # The ipv4: resolver takes a fixed list, the way a headless Service's DNS name answers with pod IPs.
        self.target = "ipv4:" + ",".join(f"{address}:{number}" for address, number in addresses)
        options = [
            ("grpc.lb_policy_name", policy.lb),
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.enable_retries", 1),
        ]
        self._channel = grpc.insecure_channel(self.target, options=options)
        self._call = self._channel.unary_unary(GRPC_UNARY)

    def request(self, path: str) -> Exchange:
        """One unary call (``path`` is HTTP's; a gRPC call has its method instead); never raises."""
        grpc = self._grpc
        start = time.monotonic()
        try:
            body, call = self._call.with_call(b"{}", timeout=self._timeout, wait_for_ready=False)
        except grpc.RpcError as exc:
            return self._failed(exc, start)
        return self._exchange(200, "", call.initial_metadata() or (), len(body), start, None)

    def _failed(self, exc: Any, start: float) -> Exchange:
        metadata = _safe(exc.initial_metadata) or ()
        code = _safe(exc.code)
        name = getattr(code, "name", "UNKNOWN")
        detail = f"gRPC {name}: {_safe(exc.details) or ''}"
        if any(key == "x-pod-name" for key, _ in metadata):
            # the server answered with an error status (an injected fault): attributable to its pod
            return self._exchange(503, "http_5xx", metadata, 0, start, RequestFailed("http_5xx", detail))
        kind = _STATUS_KINDS.get(name, "other")
        latency = (time.monotonic() - start) * 1000.0
        return Exchange(0, kind, "", "", -1, -1, 0, latency, 0, RequestFailed(kind, detail))

    def _exchange(
        self, status: int, kind: str, metadata: Any, length: int, start: float, exc: BaseException | None
    ) -> Exchange:
        end = time.monotonic()
        facts = {key: value for key, value in metadata}
        pod = str(facts.get("x-pod-name", ""))
        server_conn = _int(facts.get("x-conn-id"), -1)
        return Exchange(
            status,
            kind,
            pod,
            str(facts.get("x-node-name", "")),
            self._ids.for_server_connection(pod, server_conn),
            server_conn,
            _int(facts.get("x-conn-request"), 0),
            (end - start) * 1000.0,
            length,
            exc,
            _int(facts.get("x-stream-id"), 0),
        )

    def close(self) -> None:
        self._channel.close()


def _safe(method: Any) -> Any:
    try:
        return method()
    except Exception:  # an RpcError that is not a Call has none of these
        return None


def _int(value: object, default: int) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return default
