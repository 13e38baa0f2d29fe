"""The load of a cell, as one value object: how many clients, how they pace requests, for how long.

The scenario builds a :class:`Load` from its YAML, a cell holds it, the run manifest stores
:meth:`Load.manifest` (``run.json``'s ``load``), and the locustfile gets it back from its options
(:data:`LOCUST_OPTIONS`: one table for both directions). It is checked once, on construction; durations are
seconds and every field that holds one says so (``_s``).

    >>> Load(users_per_source=4, think_time_s=0.3, duration_s=20, warmup_s=2)       # closed loop
    >>> Load(model="open", rate=500, duration_s=20)                                  # open loop, 500 req/s
    >>> Load(burst=20, pause_s=1.5)                                                  # paced on/off
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from loadtests.drivers import DRIVERS
from loadtests.policy import PolicyError, format_duration, parse_duration
from loadtests.protocols import protocol_spec

LoadModelName = Literal["closed", "open"]


@dataclass(frozen=True, kw_only=True)
class Load:
    """How one cell's clients send; InvalidInput-style one-line ``PolicyError`` on a bad combination."""

    model: LoadModelName = "closed"
    """``closed``: users send, think and send again; ``open``: requests go out at ``rate`` whatever the
    latency (each has an intended send time; the lag is recorded as ``wait_ms``)."""
    driver: str = "policy"
    """What sends: the pool-policy model or a real library's pool (``loadtests.drivers.DRIVERS``)."""
    protocol: str = "http1"
    """What the clients speak: ``http1``, ``http1-tls``, ``h2``, ``h2-tls`` or ``grpc``
    (``loadtests.protocols.PROTOCOLS``)."""
    service: Literal["clusterip", "headless"] = "clusterip"
    """Which addresses the clients dial: the Service's ClusterIP, or (``headless``, gRPC only) every ready
    pod's address, as a headless Service's DNS name answers; the runner hands them over as ``--endpoints``."""
    users_per_source: int = 1
    """Locust users in each source pod's load generator."""
    think_time_s: float = 0.0
    """Closed loop: wait after each request."""
    burst: int | None = None
    """Paced on/off: requests sent back to back before each pause (None: no pacing)."""
    pause_s: float | None = None
    """Paced on/off: the idle gap after each burst (the only case where an idle timeout rebalances)."""
    rate: float | None = None
    """Open loop: requests per second over all source pods together."""
    duration_s: float | None = 15.0
    """How long the cell sends, warm-up included; None: until the load generator is stopped."""
    warmup_s: float = 2.0
    """Requests intended during the first seconds are flagged warm-up and excluded from every metric."""
    url_path: str = "/"
    """The HTTP request path (the *Service* path, clusterip/nodeport, is the scenario's ``path``)."""
    spawn_rate: float | None = None
    """Users started per second over the whole cell; None: all at once."""
    stop_timeout_s: float = 10.0
    """When the time is up, users get this long to finish the request in flight (none is cut off)."""
    stop_after_requests: int | None = None
    """Per load-generator process: stop after this many requests (exact counts in tests)."""

    def __post_init__(self) -> None:
        if self.model not in ("closed", "open"):
            raise PolicyError(f"load model must be closed or open, got {self.model!r}")
        if self.driver not in DRIVERS:
            raise PolicyError(f"unknown driver {self.driver!r}: choose one of {', '.join(DRIVERS)}")
        if protocol_spec(self.protocol).grpc is False and self.service == "headless":
            raise PolicyError(
                f"service headless is for protocol grpc (round_robin over the pods), not {self.protocol}"
            )
        if self.service not in ("clusterip", "headless"):
            raise PolicyError(f"service must be clusterip or headless, got {self.service!r}")
        if isinstance(self.users_per_source, bool) or self.users_per_source < 1:
            raise PolicyError(f"users per source must be at least 1, got {self.users_per_source!r}")
        for name, value in (
            ("think time", self.think_time_s),
            ("pause", self.pause_s or 0.0),
            ("warm-up", self.warmup_s),
            ("stop timeout", self.stop_timeout_s),
        ):
            if not math.isfinite(value) or value < 0:
                raise PolicyError(f"{name} must be zero or a positive duration, got {value!r}")
        if self.duration_s is not None:
            if not math.isfinite(self.duration_s) or self.duration_s <= 0:
                raise PolicyError(f"duration must be positive, e.g. 15s, got {self.duration_s!r}")
            if self.warmup_s >= self.duration_s:
                raise PolicyError(
                    f"warmup ({self.warmup_s:g}s) must be shorter than duration ({self.duration_s:g}s)"
                )
        if self.burst is not None and self.burst < 1:
            raise PolicyError(f"burst must be a number of requests (1 or more), got {self.burst}")
        if (self.burst is None) != (self.pause_s is None):
            raise PolicyError("burst and pause go together: 'burst: 5, pause: 1.5s' sends 5 then idles 1.5 s")
        if self.rate is not None and (not math.isfinite(self.rate) or self.rate <= 0):
            raise PolicyError(f"rate must be a positive number of requests per second, got {self.rate!r}")
        if self.model == "open":
            if self.rate is None:
                raise PolicyError("model 'open' needs rate: requests per second over all sources, e.g. 500")
            if self.think_time_s or self.burst is not None:
                raise PolicyError("rate (open loop) excludes think time and burst/pause (closed loop)")
        elif self.rate is not None:
            raise PolicyError(
                "rate is for model 'open'; a closed loop is set by users_per_source and think_time"
            )
        if self.spawn_rate is not None and not self.spawn_rate > 0:
            raise PolicyError(f"spawn rate must be positive, got {self.spawn_rate!r}")
        if self.stop_after_requests is not None and self.stop_after_requests < 1:
            raise PolicyError(f"stop-after-requests must be at least 1, got {self.stop_after_requests}")
        if not self.url_path.startswith("/"):
            raise PolicyError(f"the URL path must start with '/', got {self.url_path!r}")

    @property
    def open_loop(self) -> bool:
        return self.model == "open"

    def manifest(self) -> dict[str, Any]:
        """The ``load`` object of ``run.json`` (``analysis.manifest.LoadSpec``): the fields that describe
        the measurement (not ``stop_after_requests``, a test knob)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in MANIFEST_FIELDS}

    def locust_options(self) -> list[str]:
        """This load as the locustfile's own options (see :data:`LOCUST_OPTIONS`)."""
        options: list[str] = []
        for option in LOCUST_OPTIONS:
            value = getattr(self, option.field)
            if value != option.default:
                options += [option.flag, option.render(value)]
        return options

    @classmethod
    def from_locust(cls, parsed: Any, **rest: Any) -> Load:
        """The load named by Locust's parsed options (plus ``rest``); PolicyError on bad values."""
        values = {option.field: option.read(getattr(parsed, option.dest)) for option in LOCUST_OPTIONS}
        values["model"] = "open" if values["rate"] is not None else "closed"
        return cls(**values, **rest)

    def with_(self, **changes: Any) -> Load:
        return replace(self, **changes)


MANIFEST_FIELDS = (
    "model",
    "driver",
    "protocol",
    "service",
    "users_per_source",
    "think_time_s",
    "burst",
    "pause_s",
    "rate",
    "duration_s",
    "warmup_s",
    "url_path",
)


# -- the locustfile's options: one row per field, read and written by the same table --------------------


def _duration(text: str, flag: str) -> float:
    return parse_duration(text, what=flag, allow_zero=True)


@dataclass(frozen=True, kw_only=True)
class LocustOption:
    """One locustfile option carrying one :class:`Load` field (text both ways, the empty text = default)."""

    field: str
    flag: str
    help: str
    kind: Literal["duration", "int", "float", "text", "choice"]
    default: Any = None

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    def render(self, value: Any) -> str:
        if value is None:
            return ""
        if self.kind == "duration":
            return format_duration(float(value)) if value else "0"
        if self.kind == "float":
            return repr(float(value))
        return str(value)

    def read(self, text: Any) -> Any:
        if text in ("", None):
            return self.default
        text = str(text)
        if self.kind == "duration":
            return _duration(text, self.flag)
        converters: dict[str, Callable[[str], Any]] = {"int": int, "float": float}
        if self.kind in converters:
            try:
                return converters[self.kind](text)
            except ValueError:
                raise PolicyError(f"{self.flag} must be a number, got {text!r}") from None
        return text


LOCUST_OPTIONS: tuple[LocustOption, ...] = (
    LocustOption(field="driver", flag="--driver", kind="choice", default="policy",
                 help="policy model or a real library's pool"),
    LocustOption(field="protocol", flag="--protocol", kind="text", default="http1",
                 help="http1, http1-tls, h2, h2-tls or grpc"),
    LocustOption(field="url_path", flag="--path", kind="text", default="/", help="request path"),
    LocustOption(field="think_time_s", flag="--think-time", kind="duration", default=0.0,
                 help="closed loop: wait after each request, e.g. 300ms"),
    LocustOption(field="burst", flag="--burst", kind="int", help="paced on/off: requests per burst"),
    LocustOption(field="pause_s", flag="--pause", kind="duration",
                 help="paced on/off: idle gap after each burst, e.g. 2s"),
    LocustOption(field="rate", flag="--rate", kind="float",
                 help="open loop: requests per second over all users and workers"),
    LocustOption(field="warmup_s", flag="--warmup", kind="duration", default=0.0,
                 help="requests in the first DURATION are flagged warm-up"),
    LocustOption(field="duration_s", flag="--duration", kind="duration",
                 help="end the test after DURATION (a master: once the workers' last records are in)"),
    LocustOption(field="stop_after_requests", flag="--stop-after-requests", kind="int",
                 help="per process: stop after N requests"),
)  # fmt: skip
"""Every Load field a load-generator process needs; users, spawn rate and stop timeout are Locust's own
``-u``/``-r``/``-s``."""


def add_locust_arguments(add: Callable[..., Any]) -> None:
    """Register :data:`LOCUST_OPTIONS` with Locust's parser (``parser.add_argument``)."""
    for option in LOCUST_OPTIONS:
        extra: dict[str, Any] = {"choices": DRIVERS} if option.kind == "choice" else {}
        add(option.flag, default=option.render(option.default), help=option.help, **extra)
