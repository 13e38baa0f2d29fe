"""Client connection-pool policies: what a client does with its HTTP connections, as a value object.

Kube-proxy balances connections, not requests, so *how a client pools its connections* decides how load
spreads over pods. A :class:`PoolPolicy` states that behaviour exactly (when a connection is opened,
reused, kept idle, retired); the Locust users in this package enforce it request by request.

Policies have a compact string form for the CLI and scenario YAML, and named presets with the defaults of
real clients::

    >>> parse_policy("max-idle=5,idle=1s,pick=lru")
    PoolPolicy(keepalive=True, max_idle=5, ..., idle_timeout=1.0, ..., pick='lru', scope='user')
    >>> str(parse_policy("okhttp,max-age=30s±10%"))
    'max-idle=5,idle=5m,max-age=30s±10%,pick=oldest,scope=source'

A preset can start the string and be followed by overrides (``okhttp,idle=1s``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from types import MappingProxyType
from typing import Any, Literal, get_args

Pick = Literal["mru", "lru", "oldest", "random"]
Scope = Literal["user", "source"]
Lb = Literal["pick_first", "round_robin"]
Surplus = Literal["longest-idle", "returned"]

PICKS: tuple[str, ...] = get_args(Pick)
"""Which idle connection a request reuses: most recently used (Go, urllib3), least recently used (JDK,
aiohttp), the oldest open one (OkHttp, httpcore), or a random one."""

SURPLUSES: tuple[str, ...] = get_args(Surplus)
"""Which connection goes when a returned one would exceed ``max_idle``: the one idle longest (OkHttp's
cleanup, httpcore) or the returned one itself (Go, urllib3)."""

LBS: tuple[str, ...] = get_args(Lb)
"""A gRPC channel's load-balancing policy: one connection to the first address that works, or one to every
address of a headless Service with calls spread over them."""

SCOPES: tuple[str, ...] = get_args(Scope)
"""``user``: one pool per Locust user; ``source``: one pool shared by every user of a source pod's process,
like one OkHttpClient shared by an application's threads."""


class PolicyError(ValueError):
    """A policy string or value is invalid; the one-line message names the bad part and what is allowed."""


@dataclass(frozen=True, kw_only=True)
class PoolPolicy:
    """How a client opens, reuses, keeps and retires its HTTP/1.1 connections to one Service.

    Durations are seconds, ``None`` means "no limit". Jitter is a fraction (0.1 = ±10 %) drawn per
    connection, so that reconnects do not synchronise.

        >>> PoolPolicy(max_idle=5, idle_timeout=1.0, pick="oldest", scope="source")
    """

    keepalive: bool = True
    """Reuse connections; off = a new connection per request (sent with ``Connection: close``)."""
    max_idle: int | None = None
    """Idle connections kept for reuse; surplus ones are closed, longest idle first (OkHttp's
    ``maxIdleConnections``)."""
    max_connections: int | None = None
    """Cap on open connections (busy + idle); requests wait for one. None = unbounded."""
    idle_timeout: float | None = None
    """A pooled connection idle longer than this is closed (OkHttp's keep-alive duration)."""
    max_age: float | None = None
    """A connection older than this is retired after its current request."""
    max_age_jitter: float = 0.0
    max_requests: int | None = None
    """A connection that carried this many requests is retired (its last one says ``Connection: close``)."""
    max_requests_jitter: float = 0.0
    pick: Pick = "mru"
    surplus: Surplus = "longest-idle"
    """Which connection a full idle pool closes: the one idle longest (OkHttp's cleanup task evicts it), or
    the one being returned, keeping the older idle ones (Go's ``tryPutIdleConn`` answers
    ``errTooManyIdleHost`` and the caller closes it; urllib3's ``_put_conn`` discards it when full)."""
    scope: Scope = "user"
    max_streams: int | None = None
    """HTTP/2: concurrent streams per connection before another connection opens (the server's
    SETTINGS_MAX_CONCURRENT_STREAMS caps it too). None = only the server's limit."""
    lb: Lb = "pick_first"
    """gRPC: the channel's load-balancing policy."""

    def __post_init__(self) -> None:
        if not isinstance(self.keepalive, bool):
            raise PolicyError(f"keepalive must be true or false, got {self.keepalive!r}")
        if self.max_idle is not None:
            _check_int("max-idle", self.max_idle, least=0)
        if self.max_connections is not None:
            _check_int("max-conns", self.max_connections, least=1)
        if self.max_requests is not None:
            _check_int("max-requests", self.max_requests, least=1)
        if self.max_streams is not None:
            _check_int("max-streams", self.max_streams, least=1)
        if self.lb not in LBS:
            raise PolicyError(f"unknown lb {self.lb!r}: choose one of {', '.join(LBS)}")
        for name, value in (("idle", self.idle_timeout), ("max-age", self.max_age)):
            if value is not None:
                _check_duration(name, value)
        for name, jitter in (("max-age", self.max_age_jitter), ("max-requests", self.max_requests_jitter)):
            if not isinstance(jitter, int | float) or not 0.0 <= jitter < 1.0:
                raise PolicyError(f"{name} jitter must be between 0% and 99%, got {jitter!r}")
        if self.max_age_jitter and self.max_age is None:
            raise PolicyError("max-age jitter needs a max-age, e.g. max-age=30s±10%")
        if self.max_requests_jitter and self.max_requests is None:
            raise PolicyError("max-requests jitter needs a max-requests, e.g. max-requests=100±10%")
        if self.pick not in PICKS:
            raise PolicyError(f"unknown pick {self.pick!r}: choose one of {', '.join(PICKS)}")
        if self.scope not in SCOPES:
            raise PolicyError(f"unknown scope {self.scope!r}: choose one of {', '.join(SCOPES)}")
        if self.surplus not in SURPLUSES:
            raise PolicyError(f"unknown surplus {self.surplus!r}: choose one of {', '.join(SURPLUSES)}")

    def spec(self) -> str:
        """The canonical compact string; ``parse_policy(p.spec()) == p``."""
        parts: list[str] = [] if self.keepalive else ["per-request"]
        if self.max_idle is not None:
            parts.append(f"max-idle={self.max_idle}")
        if self.max_connections is not None:
            parts.append(f"max-conns={self.max_connections}")
        if self.idle_timeout is not None:
            parts.append(f"idle={format_duration(self.idle_timeout)}")
        if self.max_age is not None:
            parts.append(f"max-age={format_duration(self.max_age)}{_format_jitter(self.max_age_jitter)}")
        if self.max_requests is not None:
            parts.append(f"max-requests={self.max_requests}{_format_jitter(self.max_requests_jitter)}")
        if self.pick != "mru":
            parts.append(f"pick={self.pick}")
        if self.surplus != "longest-idle":
            parts.append(f"surplus={self.surplus}")
        if self.scope != "user":
            parts.append(f"scope={self.scope}")
        if self.max_streams is not None:
            parts.append(f"max-streams={self.max_streams}")
        if self.lb != "pick_first":
            parts.append(f"lb={self.lb}")
        return ",".join(parts) or "keepalive"

    def __str__(self) -> str:
        return self.spec()


def _check_int(name: str, value: object, *, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise PolicyError(f"{name} must be a whole number of at least {least}, got {value!r}")


def _check_duration(name: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise PolicyError(f"{name} must be a positive duration like 250ms, 1s or 5m, got {value!r}")


# ---------------------------------------------------------------------------------------------------------
# Durations and jitter
# ---------------------------------------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(?P<num>[-+]?[0-9]*\.?[0-9]+)\s*(?P<unit>ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str, *, what: str = "duration", allow_zero: bool = False) -> float:
    """Seconds from ``250ms``, ``1s``, ``1.5s``, ``5m``, ``2h`` or a bare number of seconds.

    >>> parse_duration("250ms")
    0.25
    """
    match = _DURATION.match(text)
    if match is None:
        raise PolicyError(f"{what} must be a duration like 250ms, 1s, 1.5s or 5m, got {text!r}")
    seconds = float(match["num"]) * _UNIT_SECONDS[match["unit"]]
    if seconds < 0 or (seconds == 0 and not allow_zero):
        least = "zero or a positive" if allow_zero else "a positive"
        raise PolicyError(f"{what} must be {least} duration like 250ms, 1s or 5m, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact compact form of a duration: ``0.25`` → ``250ms``, ``300`` → ``5m``."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    millis = round(seconds * 1000, 6)
    if millis == int(millis):
        return f"{int(millis)}ms"
    return f"{seconds:g}s"


_JITTER = re.compile(r"^(?P<base>.*?)\s*(?:±|\+-|\+/-)\s*(?P<pct>[0-9]*\.?[0-9]+)\s*%\s*$")


def _split_jitter(key: str, text: str) -> tuple[str, float]:
    match = _JITTER.match(text)
    if match is None:
        if "±" in text or "+-" in text:
            raise PolicyError(
                f"{key} jitter must be a percentage like {key}=30s±10% or 30s+-10%, got {text!r}"
            )
        return text, 0.0
    pct = float(match["pct"])
    if not 0 <= pct < 100:
        raise PolicyError(f"{key} jitter must be between 0% and 99%, got {text!r}")
    return match["base"], pct / 100.0


def _format_jitter(fraction: float) -> str:
    return f"±{fraction * 100:g}%" if fraction else ""


# ---------------------------------------------------------------------------------------------------------
# Presets: real clients' defaults. Presets model one client object per application (scope=source), which is
# how these libraries are meant to be used; append ",scope=user" for a pool per Locust user.
# ---------------------------------------------------------------------------------------------------------

KEEPALIVE = PoolPolicy()
"""Reuse connections forever, one pool per user: the worst case for connection-level balancing."""

PER_REQUEST = PoolPolicy(keepalive=False)
"""A new connection for every request (``Connection: close``): perfect spread, a handshake per request."""

OKHTTP = PoolPolicy(max_idle=5, idle_timeout=300.0, pick="oldest", scope="source")
"""OkHttp 3/4/5 default ``ConnectionPool(5, 5, TimeUnit.MINUTES)`` (square/okhttp
``okhttp3/ConnectionPool.kt``); ``RealConnectionPool.callAcquirePooledConnection`` walks the pool in
creation order and takes the first eligible connection, hence ``pick=oldest``. Synchronous calls have no
connection cap."""

OKHTTP_1S = PoolPolicy(max_idle=5, idle_timeout=1.0, pick="oldest", scope="source")
"""The seed's fix: OkHttp with ``ConnectionPool(5, 1, TimeUnit.SECONDS)``; only rebalances when there are
idle gaps longer than 1 s."""

GO = PoolPolicy(max_idle=2, idle_timeout=90.0, pick="mru", surplus="returned", scope="source")
"""Go ``net/http.DefaultTransport``: ``DefaultMaxIdleConnsPerHost = 2``, ``IdleConnTimeout: 90s``,
``MaxConnsPerHost: 0`` (unbounded); ``Transport.queueForIdleConn`` takes ``list[len(list)-1]``, the most
recently used, and ``tryPutIdleConn`` refuses a connection returned to a full host list
(``errTooManyIdleHost``), which ``putOrCloseIdleConn`` then closes (golang/go
``src/net/http/transport.go``)."""

REQUESTS = PoolPolicy(max_idle=10, pick="mru", surplus="returned", scope="source")
"""python-requests ``HTTPAdapter(pool_maxsize=10, pool_block=False)`` over urllib3, whose pool is a
``queue.LifoQueue`` (most recently used first) that never expires idle connections and, full, discards the
returned one (``_put_conn``: ``queue.Full`` → "Connection pool is full, discarding connection")
(psf/requests ``requests/adapters.py``, urllib3 ``connectionpool.py``)."""

HTTPX = PoolPolicy(max_idle=20, max_connections=100, idle_timeout=5.0, pick="oldest", scope="source")
"""httpx ``DEFAULT_LIMITS = Limits(max_connections=100, max_keepalive_connections=20)`` with
``keepalive_expiry=5.0`` (encode/httpx ``httpx/_config.py``); httpcore reuses the first available
connection in creation order (``ConnectionPool._assign_requests_to_connections``)."""

AIOHTTP = PoolPolicy(max_connections=100, idle_timeout=15.0, pick="lru", scope="source")
"""aiohttp ``TCPConnector(limit=100, keepalive_timeout=15.0)`` (aio-libs/aiohttp ``aiohttp/connector.py``);
since 3.10 released connections are appended to a deque and reused with ``popleft()`` (least recently
used)."""

JDK = PoolPolicy(idle_timeout=1200.0, pick="lru", scope="source")
"""JDK ``java.net.http.HttpClient``: ``jdk.httpclient.keepalive.timeout`` = 1200 s (JDK 11-20; 30 s in
newer JDKs), no idle cap; ``ConnectionPool.findConnection`` reuses ``removeFirst()`` of a list filled with
``add()`` (least recently used) (openjdk ``jdk/internal/net/http/ConnectionPool.java``)."""

GRPC = PoolPolicy(scope="source")
"""A gRPC channel as grpcio creates it: ``pick_first`` (gRPC's default load-balancing policy), one channel
shared by the application; kept alive with no age limit (grpc/grpc ``doc/load-balancing.md``)."""

GRPC_ROUND_ROBIN = PoolPolicy(scope="source", lb="round_robin")
"""A gRPC channel with ``{"loadBalancingConfig": [{"round_robin": {}}]}``: a connection to every address the
resolver returns (a headless Service's pods), calls spread over them in turn."""

PRESETS: Mapping[str, PoolPolicy] = MappingProxyType(
    {
        "keepalive": KEEPALIVE,
        "per-request": PER_REQUEST,
        "okhttp": OKHTTP,
        "okhttp-1s": OKHTTP_1S,
        "go": GO,
        "requests": REQUESTS,
        "httpx": HTTPX,
        "aiohttp": AIOHTTP,
        "jdk": JDK,
        "grpc": GRPC,
        "grpc-rr": GRPC_ROUND_ROBIN,
    }
)
"""Every preset by the name used in scenarios and on the command line."""


# ---------------------------------------------------------------------------------------------------------
# Parsing the compact form
# ---------------------------------------------------------------------------------------------------------

_KEYS = (
    "keepalive=on|off, max-idle=N, max-conns=N|none, idle=DURATION|none, max-age=DURATION[±J%], "
    "max-requests=N[±J%], pick=mru|lru|oldest|random, surplus=longest-idle|returned, scope=user|source, "
    "max-streams=N (HTTP/2), "
    "lb=pick_first|round_robin (gRPC)"
)
_ALIASES = {
    "max-connections": "max-conns",
    "idle-timeout": "idle",
    "keepalive-duration": "idle",
    "max-conn-age": "max-age",
}
_NONE = ("none", "unbounded", "never", "off")


def parse_policy(text: str) -> PoolPolicy:
    """A policy from a preset name or the compact form, optionally a preset followed by overrides.

    >>> parse_policy("okhttp-1s") == OKHTTP_1S
    True
    >>> parse_policy("max-requests=100±10%,pick=random").max_requests_jitter
    0.1
    """
    if not isinstance(text, str) or not text.strip():
        raise PolicyError(f"empty pool policy: use a preset ({', '.join(PRESETS)}) or options like idle=1s")
    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        raise PolicyError(f"policy {text!r} has an empty item: separate options with single commas")
    values: dict[str, Any] = {}
    base = PoolPolicy()
    first = items[0]
    if first in PRESETS and first not in ("keepalive", "per-request"):
        base = PRESETS[first]
        items = items[1:]
    given: set[str] = set()
    for item in items:
        key, sep, value = item.partition("=")
        key = _ALIASES.get(key.strip().lower(), key.strip().lower())
        value = value.strip()
        knob = "keepalive" if key in ("per-request", "no-keepalive") else key
        if knob in given:
            # "Last one wins" would silently measure something other than what was written.
            raise PolicyError(f"policy {text!r} sets {knob} twice: give each option once")
        given.add(knob)
        if not sep:
            if key == "keepalive":
                values["keepalive"] = True
            elif key in ("per-request", "no-keepalive"):
                values["keepalive"] = False
            elif key in PRESETS:
                raise PolicyError(f"preset {key!r} must come first in {text!r}, e.g. {key},idle=1s")
            else:
                raise PolicyError(
                    f"unknown pool policy {item!r} in {text!r}: presets are {', '.join(PRESETS)}; "
                    f"options are {_KEYS}"
                )
            continue
        try:
            _parse_option(key, value, values)
        except PolicyError as exc:
            raise PolicyError(f"policy {text!r}: {exc}") from None
    try:
        return replace(base, **values)
    except PolicyError as exc:
        raise PolicyError(f"policy {text!r}: {exc}") from None


def _parse_option(key: str, value: str, values: dict[str, Any]) -> None:
    if key == "keepalive":
        if value.lower() in ("on", "true", "yes", "1"):
            values["keepalive"] = True
        elif value.lower() in ("off", "false", "no", "0"):
            values["keepalive"] = False
        else:
            raise PolicyError(f"keepalive must be on or off, got {value!r}")
    elif key in ("max-idle", "max-conns"):
        field = "max_idle" if key == "max-idle" else "max_connections"
        values[field] = None if value.lower() in _NONE else _parse_int(key, value)
    elif key == "idle":
        values["idle_timeout"] = None if value.lower() in _NONE else parse_duration(value, what="idle")
    elif key == "max-age":
        base, jitter = _split_jitter(key, value)
        values["max_age"] = None if base.lower() in _NONE else parse_duration(base, what="max-age")
        values["max_age_jitter"] = jitter
    elif key == "max-requests":
        base, jitter = _split_jitter(key, value)
        values["max_requests"] = None if base.lower() in _NONE else _parse_int(key, base)
        values["max_requests_jitter"] = jitter
    elif key == "pick":
        if value not in PICKS:
            raise PolicyError(f"unknown pick {value!r}: choose one of {', '.join(PICKS)}")
        values["pick"] = value
    elif key == "surplus":
        if value not in SURPLUSES:
            raise PolicyError(f"unknown surplus {value!r}: choose one of {', '.join(SURPLUSES)}")
        values["surplus"] = value
    elif key == "max-streams":
        values["max_streams"] = None if value.lower() in _NONE else _parse_int(key, value)
    elif key == "lb":
        if value not in LBS:
            raise PolicyError(f"unknown lb {value!r}: choose one of {', '.join(LBS)}")
        values["lb"] = value
    elif key == "scope":
        if value not in SCOPES:
            raise PolicyError(f"unknown scope {value!r}: choose one of {', '.join(SCOPES)}")
        values["scope"] = value
    else:
        raise PolicyError(f"unknown option {key!r}: options are {_KEYS}")


def _parse_int(key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise PolicyError(f"{key} must be a whole number like {key}=5, got {value!r}") from None


def policy_fields() -> tuple[str, ...]:
    """Names of the PoolPolicy fields, in declaration order (for tables and metadata)."""
    return tuple(f.name for f in fields(PoolPolicy))
