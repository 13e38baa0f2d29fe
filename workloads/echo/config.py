"""The echo server's settings: connection policies, fault knobs, pod identity, durations.

Small frozen value objects validated on construction, so a bad flag, env var or admin request fails in one
place with one sentence that says what is wrong and how to fix it.

    >>> Faults(latency_ms=50, error_rate=0.01).updated({"cpu_ms": 2}).as_dict()["cpu_ms"]
    2.0
"""

from __future__ import annotations

import math
import os
import random
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


class ConfigError(ValueError):
    """A bad flag, env var or admin request: the message says what is wrong and how to fix it."""


def parse_duration(text: str, *, name: str) -> float:
    """Seconds from ``250ms``, ``1s``, ``1.5s``, ``2m``, ``1h`` or bare seconds (``0.5``).

    >>> parse_duration("250ms", name="--latency")
    0.25
    """
    match = _DURATION.match(text)
    if match is None:
        if text.strip().startswith("-"):
            raise ConfigError(f"{name} must not be negative, got {text!r}")
        raise ConfigError(f"{name}: invalid duration {text!r}: use e.g. 250ms, 1s, 1.5s, 2m or bare seconds")
    return float(match[1]) * _SECONDS_PER_UNIT[match[2]]


def _number(value: object, *, name: str) -> float:
    # bool is an int to Python but never what a user meant by a latency or a rate
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True, kw_only=True)
class Faults:
    """Per-pod slowness and failure injection, set at start and changeable at run time on the admin port.

    Latency is ``latency_ms ± latency_jitter_ms`` (uniform, never below 0) added before the response;
    ``error_rate`` is the probability of a 503; ``cpu_ms`` is busy CPU time burnt per request (a noisy pod).

        Faults(latency_ms=50, latency_jitter_ms=10, error_rate=0.01, cpu_ms=2)
    """

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    error_rate: float = 0.0
    cpu_ms: float = 0.0
    active: bool = field(init=False, repr=False, compare=False)
    """Whether any knob is on: the request path checks this one flag instead of four."""

    def __post_init__(self) -> None:
        for name in ("latency_ms", "latency_jitter_ms", "error_rate", "cpu_ms"):
            value = _number(getattr(self, name), name=name)
            if value < 0:
                raise ConfigError(f"{name} must not be negative, got {value:g}")
            object.__setattr__(self, name, value)
        if self.error_rate > 1:
            raise ConfigError(f"error_rate is a probability between 0 and 1, got {self.error_rate:g}")
        active = bool(self.latency_ms or self.latency_jitter_ms or self.error_rate or self.cpu_ms)
        object.__setattr__(self, "active", active)

    def delay_s(self, rng: random.Random) -> float:
        """The added latency for one request, in seconds."""
        delay_ms = self.latency_ms
        if self.latency_jitter_ms:
            delay_ms += rng.uniform(-self.latency_jitter_ms, self.latency_jitter_ms)
        return max(delay_ms, 0.0) / 1000.0

    def as_dict(self) -> dict[str, float]:
        """The admin endpoint's JSON object."""
        return {
            "latency_ms": self.latency_ms,
            "latency_jitter_ms": self.latency_jitter_ms,
            "error_rate": self.error_rate,
            "cpu_ms": self.cpu_ms,
        }

    def updated(self, changes: Mapping[str, object]) -> Faults:
        """A copy with some knobs changed (an admin ``PUT`` may send a subset); unknown keys are an error."""
        current = self.as_dict()
        unknown = sorted(set(changes) - set(current))
        if unknown:
            raise ConfigError(f"unknown fault {', '.join(unknown)}: the knobs are {', '.join(current)}")
        merged: dict[str, float] = {
            name: _number(changes[name], name=name) if name in changes else value
            for name, value in current.items()
        }
        return Faults(**merged)


@dataclass(frozen=True, kw_only=True)
class ConnectionPolicy:
    """When the server ends a kept-alive connection; every limit is off (None) by default.

    The response that reaches ``max_requests_per_connection``, or that is produced when the connection is
    at least ``max_connection_age_s`` old (± ``max_connection_age_jitter``, drawn once per connection as
    gRPC's MAX_CONNECTION_AGE does), carries ``Connection: close`` and the connection is closed after it.
    ``idle_timeout_s`` closes a kept-alive connection that has had no request for that long.

    On HTTP/2 (and gRPC) the same limits end a connection with GOAWAY instead: at its age (a timer, as gRPC's
    ``MAX_CONNECTION_AGE``), or when its ``max_requests_per_connection``-th stream arrives; in-flight streams
    finish, and ``max_connection_age_grace_s`` (gRPC's ``MAX_CONNECTION_AGE_GRACE``) bounds how long they may
    take before the connection is cut. ``max_concurrent_streams`` is advertised in the server's SETTINGS.

        ConnectionPolicy(max_connection_age_s=30, max_connection_age_jitter=0.1)
    """

    max_requests_per_connection: int | None = None
    max_connection_age_s: float | None = None
    max_connection_age_jitter: float = 0.0
    max_connection_age_grace_s: float | None = None
    idle_timeout_s: float | None = None
    max_concurrent_streams: int | None = None

    def __post_init__(self) -> None:
        limit = self.max_requests_per_connection
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"max_requests_per_connection must be a whole number ≥ 1, got {limit!r}")
        streams = self.max_concurrent_streams
        if streams is not None and (isinstance(streams, bool) or not isinstance(streams, int) or streams < 1):
            raise ConfigError(f"max_concurrent_streams must be a whole number ≥ 1, got {streams!r}")
        for name in ("max_connection_age_s", "max_connection_age_grace_s", "idle_timeout_s"):
            value = getattr(self, name)
            if value is not None and _number(value, name=name) <= 0:
                raise ConfigError(f"{name} must be > 0 (leave it unset to turn it off), got {value:g}")
        jitter = _number(self.max_connection_age_jitter, name="max_connection_age_jitter")
        if not 0 <= jitter < 1:
            raise ConfigError(
                f"max_connection_age_jitter is a fraction in [0, 1) (0.1 = ±10 %), got {jitter:g}"
            )

    def as_dict(self) -> dict[str, float | int | None]:
        """The admin endpoint's JSON object (None = off)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def updated(self, changes: Mapping[str, object]) -> ConnectionPolicy:
        """A copy with some limits changed (an admin ``PUT`` may send a subset, null = off)."""
        current = self.as_dict()
        unknown = sorted(set(changes) - set(current))
        if unknown:
            raise ConfigError(f"unknown policy {', '.join(unknown)}: the limits are {', '.join(current)}")
        merged: dict[str, Any] = {**current, **changes}
        if merged["max_connection_age_jitter"] is None:
            merged["max_connection_age_jitter"] = 0.0
        for name, value in merged.items():
            if value is not None:
                _number(value, name=name)
        return ConnectionPolicy(**merged)

    def age_limit_s(self, rng: random.Random) -> float | None:
        """This connection's maximum age: the configured age with its jitter drawn once."""
        if self.max_connection_age_s is None:
            return None
        jitter = self.max_connection_age_jitter
        return (
            self.max_connection_age_s * (1 + rng.uniform(-jitter, jitter))
            if jitter
            else self.max_connection_age_s
        )


@dataclass(frozen=True, kw_only=True)
class Identity:
    """Which pod answers: from the downward API env vars, else the hostname and the listening address.

    ``pod_ip`` None means "the local address the client connected to", used when the server listens on a
    wildcard address and ``POD_IP`` is unset.

        Identity.from_env({"POD_NAME": "echo-0", "NODE_NAME": "node-1"}, host="0.0.0.0")
    """

    pod: str
    pod_ip: str | None
    node: str

    def __post_init__(self) -> None:
        for name, value in (("pod", self.pod), ("pod_ip", self.pod_ip), ("node", self.node)):
            # the values go verbatim into response headers: a control character would split the header
            if value is not None and (not value.isprintable() or not value.isascii()):
                raise ConfigError(
                    f"{name} {value!r} must be printable ASCII: it is sent in a response header "
                    "(check POD_NAME, POD_IP and NODE_NAME)"
                )

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, host: str) -> Identity:
        """Read ``POD_NAME``, ``POD_IP``, ``NODE_NAME``; else the hostname and the listening address."""
        hostname = socket.gethostname()
        pod_ip = env.get("POD_IP") or (None if host in _WILDCARD_HOSTS else host)
        return cls(pod=env.get("POD_NAME") or hostname, pod_ip=pod_ip, node=env.get("NODE_NAME") or hostname)


@dataclass(frozen=True, kw_only=True)
class TlsFiles:
    """The server certificate (PEM, chain allowed) and its private key: TLS is then offered on the echo port.

    The echo port keeps serving plaintext too: a connection whose first byte starts a TLS handshake is TLS
    (ALPN ``h2`` or ``http/1.1``), any other is HTTP/1.1 or HTTP/2 with prior knowledge.

        TlsFiles(cert="tls/server.pem", key="tls/server.key")
    """

    cert: str
    key: str

    def __post_init__(self) -> None:
        for name, path in (("tls_cert", self.cert), ("tls_key", self.key)):
            if not os.path.isfile(path):
                raise ConfigError(f"{name} {path!r} is not a readable file: pass a PEM file")


@dataclass(frozen=True, kw_only=True)
class EchoConfig:
    """Everything one echo process is started with; ``python -m workloads.echo --help`` lists the flags.

    EchoConfig(port=0, admin_port=0, policy=ConnectionPolicy(max_requests_per_connection=100))
    """

    host: str = "0.0.0.0"
    port: int = 8080
    admin_port: int = 8081
    policy: ConnectionPolicy = ConnectionPolicy()
    faults: Faults = Faults()
    ready: bool = True
    shutdown_timeout_s: float = 10.0
    log_requests: bool = False
    tls: TlsFiles | None = None

    def __post_init__(self) -> None:
        for name, port in (("port", self.port), ("admin_port", self.admin_port)):
            if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                raise ConfigError(f"{name} must be between 0 and 65535 (0 = any free port), got {port!r}")
        if self.port == self.admin_port != 0:
            raise ConfigError(f"port and admin_port must differ, both are {self.port}")
        if _number(self.shutdown_timeout_s, name="shutdown_timeout") <= 0:
            raise ConfigError(f"shutdown_timeout must be > 0, got {self.shutdown_timeout_s:g}")
