"""The protocols a client speaks to the echo Service, and which pool-policy knobs each one has.

==============  =============================================================================================
protocol        client
==============  =============================================================================================
``http1``       HTTP/1.1 in plaintext, :class:`~loadtests.client.PolicyClient` (every pool knob)
``http1-tls``   HTTP/1.1 over TLS, the same client: every new connection pays a TLS handshake
``h2``          HTTP/2 with prior knowledge (h2c), :class:`~loadtests.h2client.H2Client` on the h2 library:
                streams multiplexed on few connections (``max-conns``, ``max-streams``, ``max-age``,
                ``max-requests`` = streams per connection, ``idle``)
``h2-tls``      HTTP/2 over TLS (ALPN ``h2``), the same client
``grpc``        gRPC unary calls on a grpcio channel, :class:`~loadtests.grpcclient.GrpcClient`:
                ``lb=pick_first|round_robin`` (round_robin needs the endpoints of a headless Service)
==============  =============================================================================================

A knob the protocol's client does not have is an error that says what to use instead, never ignored.

    >>> check_protocol("grpc", parse_policy("max-age=30s"))
    Traceback (most recent call last):
    PolicyError: protocol grpc: a gRPC channel has no max-age; use the server's max_connection_age …
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from loadtests.policy import PolicyError, PoolPolicy

TLS_SERVER_NAME = "echo.balancebench.test"
"""The name TLS clients send (SNI) and verify in the echo's certificate, whatever address they dial."""


@dataclass(frozen=True, kw_only=True)
class ProtocolSpec:
    """What a protocol is on the wire, and which PoolPolicy knobs its client honours."""

    name: str
    tls: bool
    http2: bool
    grpc: bool = False
    knobs: frozenset[str]
    """PoolPolicy fields the client enforces; any other set away from its default is refused."""


_HTTP1_KNOBS = frozenset(
    {
        "keepalive",
        "max_idle",
        "max_connections",
        "idle_timeout",
        "max_age",
        "max_requests",
        "pick",
        "surplus",
        "scope",
    }
)
_H2_KNOBS = frozenset({"max_connections", "max_streams", "idle_timeout", "max_age", "max_requests", "scope"})
_GRPC_KNOBS = frozenset({"lb", "scope"})

PROTOCOLS: Mapping[str, ProtocolSpec] = MappingProxyType(
    {
        "http1": ProtocolSpec(name="http1", tls=False, http2=False, knobs=_HTTP1_KNOBS),
        "http1-tls": ProtocolSpec(name="http1-tls", tls=True, http2=False, knobs=_HTTP1_KNOBS),
        "h2": ProtocolSpec(name="h2", tls=False, http2=True, knobs=_H2_KNOBS),
        "h2-tls": ProtocolSpec(name="h2-tls", tls=True, http2=True, knobs=_H2_KNOBS),
        "grpc": ProtocolSpec(name="grpc", tls=False, http2=True, grpc=True, knobs=_GRPC_KNOBS),
    }
)
"""Every protocol by the name used in scenarios (``load.protocol``) and on the command line."""

_INSTEAD = {
    "grpc": {
        "max_age": "use the server's max_connection_age (echo.max_connection_age), which sends GOAWAY",
        "max_requests": "use the server's max_requests_per_connection, which sends GOAWAY",
        "keepalive": "a channel always keeps its connection",
        "max_connections": "a channel keeps one connection per address; use lb=round_robin over endpoints",
        "idle_timeout": "use the server's max_connection_age",
    },
    "h2": {
        "keepalive": "HTTP/2 always keeps its connections; use max-requests=1 for one stream per connection",
        "pick": "new streams go to the open connection with the fewest streams",
        "max_idle": "use max-conns",
        "surplus": "it keeps no idle cap (max-idle); use max-conns",
    },
    "http1": {
        "max_streams": "HTTP/1.1 carries one request at a time per connection; use protocol h2",
        "lb": "lb is a gRPC channel policy; use protocol grpc",
    },
}


def protocol_spec(name: str) -> ProtocolSpec:
    """The spec of a protocol name; PolicyError naming the choices for an unknown one."""
    spec = PROTOCOLS.get(name)
    if spec is None:
        raise PolicyError(f"unknown protocol {name!r}: choose one of {', '.join(PROTOCOLS)}")
    return spec


def check_protocol(name: str, policy: PoolPolicy, *, driver: str = "policy", endpoints: str = "") -> None:
    """PolicyError when the protocol is unknown or its client cannot do what ``policy`` asks."""
    spec = protocol_spec(name)
    if name != "http1" and driver != "policy":
        raise PolicyError(
            f"protocol {name} is spoken by the policy driver only (driver {driver} speaks http1): "
            "use driver policy"
        )
    defaults = PoolPolicy()
    family = "grpc" if spec.grpc else "h2" if spec.http2 else "http1"
    for knob in sorted(set(_all_knobs()) - spec.knobs):
        if getattr(policy, knob) != getattr(defaults, knob):
            instead = _INSTEAD.get(family, {}).get(knob, "drop it")
            raise PolicyError(f"protocol {name}: the client has no {knob.replace('_', '-')}; {instead}")
    if spec.grpc and policy.lb == "round_robin" and not endpoints:
        raise PolicyError(
            "protocol grpc: lb=round_robin needs the endpoints of a headless Service "
            "(load.service: headless, or --endpoints IP:PORT,…)"
        )
    if endpoints and not spec.grpc:
        raise PolicyError(f"protocol {name}: a headless Service's endpoints are used by protocol grpc only")


def parse_endpoints(text: str) -> tuple[tuple[str, int], ...]:
    """``10.244.1.2:8080,10.244.1.3:8080`` → ((host, port), …); PolicyError for anything else."""
    endpoints: list[tuple[str, int]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise PolicyError(f"endpoint {item!r} must be IP:PORT, e.g. 10.244.1.2:8080")
        endpoints.append((host.strip("[]"), int(port)))
    return tuple(endpoints)


def _all_knobs() -> tuple[str, ...]:
    from loadtests.policy import policy_fields

    return tuple(name for name in policy_fields() if not name.endswith("_jitter"))
