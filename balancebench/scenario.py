"""Scenario files: a pydantic model of one benchmark matrix and its expansion into cells.

A scenario names the cluster, the echo pods' options, the load, the client pool policies, the dataplanes and
the service paths; ``cells()`` expands dataplanes × paths × policies × repetitions into the independent units
a run measures.

    >>> scenario = load_scenario(Path("loadtests/scenarios/seed.yaml"), overrides=["load.duration=5s"])
    >>> [cell.id for cell in scenario.cells()]
    ['nftables/okhttp', 'nftables/okhttp-1s', …]

Every validation error is one line naming the file, the field and the allowed values (``InvalidInput``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from balancebench.clusters import registry
from balancebench.clusters.base import DATAPLANES, dataplane_choices, is_dataplane
from balancebench.durations import Duration
from balancebench.errors import InvalidInput
from balancebench.events import Event, PlanError, check_timeline, parse_event
from balancebench.names import SCENARIO_NAME_MAX
from balancebench.paths import DEFAULT_PATH, check_entered_nodes, parse_path, path_choices
from balancebench.yamlfile import parse_yaml, read_text
from loadtests.load import Load

Dataplane = str
"""A dataplane name (``clusters.base.is_dataplane``); the provider's ``check`` says if it runs it."""


class _Strict(BaseModel):
    # allow_inf_nan=False: NaN and infinity never pass (they used to fail only once a cluster was up).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


MAX_DURATION = 24 * 3600.0
"""Longest duration anywhere in a scenario (a cell, a think time, a latency): a day. Longer is a soak test,
not a cell, and Locust's run time and timers are not meant for it."""

MAX_COUNT = 1_000_000_000
"""Upper bound of a count knob (requests per connection, burst): anything above means "never"."""

MAX_RATE = 1_000_000.0
"""Requests per second an open loop may ask for; what this machine can actually hold is checked by
``balancebench.limits`` before a cluster starts."""


def _at_most_a_day(seconds: float) -> float:
    if seconds > MAX_DURATION:
        raise ValueError(f"must be at most 24h, got {seconds:g}s")
    return seconds


BoundedDuration = Annotated[Duration, AfterValidator(_at_most_a_day)]

LABEL = r"^[^/\s\x00-\x1f\x7f][^/\x00-\x1f\x7f]{0,63}$"
"""A policy's display name: part of a cell id (``dataplane/label``), so no '/', no control characters, at
most 64 characters."""


class ClusterConfig(_Strict):
    """Where the load runs: a provider (``auto``: the first that runs here) and the topology."""

    provider: str = registry.AUTO
    nodes: int = Field(2, ge=1, le=200)  # addressing.MAX_NODES
    targets: int = Field(6, ge=1, le=10_000)  # what the machine holds is limits.py's to say
    sources: int = Field(2, ge=1, le=200)
    node_kernel: Literal["auto", "host", "uml"] = "auto"
    """The nodes' kernel: ``auto`` runs a dataplane the host kernel lacks (ipvs) on User-Mode Linux nodes."""

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, name: str) -> str:
        if name != registry.AUTO and name not in registry.names():
            raise ValueError(
                f"unknown provider {name!r}: choose {', '.join(registry.names())} or {registry.AUTO}"
            )
        return name


class PodFaults(_Strict):
    """Slowness and faults for one echo pod (a slow or noisy pod)."""

    latency: BoundedDuration = 0.0
    latency_jitter: BoundedDuration = 0.0
    error_rate: float = Field(0.0, ge=0.0, le=1.0)
    cpu_ms: float = Field(0.0, ge=0.0, le=MAX_DURATION * 1000)

    def flags(self) -> tuple[str, ...]:
        flags: list[str] = []
        if self.latency:
            flags += ["--latency", f"{self.latency}s"]
        if self.latency_jitter:
            flags += ["--latency-jitter", f"{self.latency_jitter}s"]
        if self.error_rate:
            flags += ["--error-rate", str(self.error_rate)]
        if self.cpu_ms:
            flags += ["--cpu-ms", str(self.cpu_ms)]
        return tuple(flags)


class EchoConfig(PodFaults):
    """The echo pods: server-side connection policies (all off by default), faults, per-pod overrides."""

    max_requests_per_connection: int | None = Field(None, ge=1, le=MAX_COUNT)
    max_connection_age: BoundedDuration | None = None
    max_connection_age_jitter: float = Field(0.0, ge=0.0, lt=1.0)
    max_connection_age_grace: BoundedDuration | None = None
    """HTTP/2 and gRPC: how long in-flight streams may take after the max-age GOAWAY."""
    idle_timeout: BoundedDuration | None = None
    max_concurrent_streams: int | None = Field(None, ge=1, le=MAX_COUNT)
    """HTTP/2 and gRPC: SETTINGS_MAX_CONCURRENT_STREAMS the echo advertises."""
    pods: dict[str, PodFaults] = Field(default_factory=dict)

    @field_validator("pods")
    @classmethod
    def _pod_names(cls, pods: dict[str, PodFaults]) -> dict[str, PodFaults]:
        for name in pods:
            if not re.fullmatch(r"echo-\d+", name):
                raise ValueError(f"unknown pod {name!r}: echo pods are named echo-0, echo-1, …")
        return pods

    def flags(self) -> tuple[str, ...]:
        flags = list(super().flags())
        if self.max_requests_per_connection:
            flags += ["--max-requests-per-connection", str(self.max_requests_per_connection)]
        if self.max_connection_age:
            flags += ["--max-connection-age", f"{self.max_connection_age}s"]
            if self.max_connection_age_jitter:
                flags += ["--max-connection-age-jitter", str(self.max_connection_age_jitter)]
        if self.max_connection_age_grace:
            flags += ["--max-connection-age-grace", f"{self.max_connection_age_grace}s"]
        if self.idle_timeout:
            flags += ["--idle-timeout", f"{self.idle_timeout}s"]
        if self.max_concurrent_streams:
            flags += ["--max-concurrent-streams", str(self.max_concurrent_streams)]
        return tuple(flags)

    def connection_policy(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The echo's connection policy as its ``/admin/policy`` object, with a policy entry's ``echo:``."""
        merged = EchoConfig.model_validate({**self.model_dump(), **dict(overrides or {})})
        return {
            "max_requests_per_connection": merged.max_requests_per_connection,
            "max_connection_age_s": merged.max_connection_age,
            "max_connection_age_jitter": merged.max_connection_age_jitter,
            "max_connection_age_grace_s": merged.max_connection_age_grace,
            "idle_timeout_s": merged.idle_timeout,
            "max_concurrent_streams": merged.max_concurrent_streams,
        }

    def pod_flags(self) -> dict[str, tuple[str, ...]]:
        return {name: faults.flags() for name, faults in self.pods.items()}


class LoadConfig(_Strict):
    """The ``load:`` section as written (durations like ``300ms``); :meth:`build` makes the one
    :class:`~loadtests.load.Load` a cell holds, which checks every rule (so each is checked once)."""

    model: Literal["closed", "open"] = "closed"
    driver: Literal["policy", "httpx", "requests", "go", "okhttp", "jdk", "aiohttp"] = "policy"
    protocol: Literal["http1", "http1-tls", "h2", "h2-tls", "grpc"] = "http1"
    service: Literal["clusterip", "headless"] = "clusterip"
    users_per_source: int = Field(1, ge=1, le=1000)
    think_time: BoundedDuration = 0.0
    burst: int | None = Field(None, ge=1, le=MAX_COUNT)
    pause: BoundedDuration | None = None
    rate: float | None = Field(None, gt=0, le=MAX_RATE)
    duration: BoundedDuration = 15.0
    warmup: BoundedDuration = 2.0

    @model_validator(mode="after")
    def _consistent(self) -> LoadConfig:
        self.build()
        return self

    def build(self) -> Load:
        """The load value object; ValueError (pydantic reports it at ``load``) when the rules say no."""
        from loadtests.policy import PolicyError

        try:
            return Load(
                model=self.model,
                driver=self.driver,
                protocol=self.protocol,
                service=self.service,
                users_per_source=self.users_per_source,
                think_time_s=self.think_time,
                burst=self.burst,
                pause_s=self.pause,
                rate=self.rate,
                duration_s=self.duration,
                warmup_s=self.warmup,
            )
        except PolicyError as exc:
            raise ValueError(str(exc)) from None


ECHO_POLICY_FIELDS = (
    "max_requests_per_connection",
    "max_connection_age",
    "max_connection_age_jitter",
    "max_connection_age_grace",
    "idle_timeout",
    "max_concurrent_streams",
)
"""The echo settings a policy entry may override (``echo:``): the server's connection policy, which the
runner sets on every echo pod before the cell (``/admin/policy``), so one cluster serves every cell."""


class PolicyEntry(_Strict):
    """One client pool policy to measure, with an optional display name, load and echo override."""

    policy: str = Field(max_length=1000)
    name: str | None = Field(None, pattern=LABEL)
    load: dict[str, Any] = Field(default_factory=dict)
    echo: dict[str, Any] = Field(default_factory=dict)

    @field_validator("echo")
    @classmethod
    def _echo_fields(cls, echo: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(echo) - set(ECHO_POLICY_FIELDS))
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}: allowed are {', '.join(ECHO_POLICY_FIELDS)}")
        try:
            EchoConfig.model_validate(echo)
        except ValidationError as exc:
            raise ValueError(_first_error(exc, EchoConfig)) from None
        return echo

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, text: str) -> str:
        from loadtests.policy import PolicyError, parse_policy

        try:
            parse_policy(text)
        except PolicyError as exc:
            raise ValueError(str(exc)) from exc
        return text

    @field_validator("load")
    @classmethod
    def _load_fields(cls, load: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(load) - set(LoadConfig.model_fields))
        if unknown:
            raise ValueError(
                f"unknown field {unknown[0]!r}: allowed are {', '.join(LoadConfig.model_fields)}"
            )
        return load

    @property
    def label(self) -> str:
        return self.name or self.policy


def _check_driver(load: LoadConfig, entry: PolicyEntry) -> None:
    from loadtests.drivers import check_driver
    from loadtests.policy import PolicyError, parse_policy
    from loadtests.protocols import check_protocol

    try:
        check_driver(load.driver, parse_policy(entry.policy))
    except PolicyError as exc:
        # loadtests/ speaks of the locustfile's --driver; in a scenario the knob is load.driver.
        hint = str(exc).replace("--driver ", "load.driver: ")
        raise ValueError(f"policy {entry.label!r}: {hint} (or --set load.driver=policy)") from exc
    try:
        # the endpoints of a headless Service are known only once the cluster is up: a stand-in here
        check_protocol(
            load.protocol,
            parse_policy(entry.policy),
            driver=load.driver,
            endpoints="headless" if load.service == "headless" else "",
        )
    except PolicyError as exc:
        hint = str(exc).replace(
            "(load.service: headless, or --endpoints IP:PORT,…)", "(load.service: headless)"
        )
        raise ValueError(f"policy {entry.label!r}: {hint}") from exc


def _default_dataplanes() -> list[Dataplane]:
    return ["nftables"]


def _default_paths() -> list[str]:
    return [DEFAULT_PATH]


def _policy_entry(value: object) -> object:
    return {"policy": value} if isinstance(value, str) else value


class Scenario(_Strict):
    """A benchmark matrix: dataplanes × policies × repetitions on one cluster shape."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=SCENARIO_NAME_MAX)
    """Part of the run directory's name (``results/<stamp>-<name>``): kept well inside a file name."""
    description: str = ""
    cluster: ClusterConfig = ClusterConfig()
    dataplanes: list[Dataplane] | Literal["all"] = Field(default_factory=_default_dataplanes, min_length=1)
    """The dataplanes to measure, or ``all``: every one this machine has (the runner resolves it)."""
    paths: list[str] = Field(default_factory=_default_paths, min_length=1)
    """The service paths to measure (``balancebench.paths``): clusterip, client-side, …"""
    echo: EchoConfig = EchoConfig()
    load: LoadConfig = LoadConfig()
    policies: list[Annotated[PolicyEntry, BeforeValidator(_policy_entry)]] = Field(min_length=1)
    repetitions: int = Field(1, ge=1, le=100)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    events: list[Annotated[Event, BeforeValidator(parse_event)]] = Field(default_factory=list)
    """Changes under load in every cell (scale, kill, rolling-restart, slow, recover, ready): see
    :mod:`balancebench.events`."""

    @field_validator("dataplanes", mode="before")
    @classmethod
    def _known_dataplanes(cls, value: object) -> object:
        choices = f"{dataplane_choices()}, or all"
        if value == "all":
            return value
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise ValueError(f"list the dataplanes to measure, e.g. [nftables, ebpf], from {choices}")
        for name in value:
            if not isinstance(name, str) or not is_dataplane(name):
                raise ValueError(f"unknown dataplane {name!r}: choose from {choices}")
        twice = sorted({name for name in value if value.count(name) > 1})
        if twice:
            # Every cell would run twice under one id, and the run could never be reported.
            raise ValueError(f"dataplane {twice[0]!r} is listed twice: list each dataplane once")
        return value

    @field_validator("paths", mode="before")
    @classmethod
    def _known_paths(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise ValueError(
                f"list the service paths to measure, e.g. [clusterip, ingress], from {path_choices()}"
            )
        for text in value:
            if not isinstance(text, str):
                raise ValueError(f"unknown path {text!r}: choose from {path_choices()}")
            parse_path(text)
        twice = sorted({text for text in value if value.count(text) > 1})
        if twice:
            raise ValueError(f"path {twice[0]!r} is listed twice: list each path once")
        return value

    @field_validator("policies")
    @classmethod
    def _unique_labels(cls, entries: list[PolicyEntry]) -> list[PolicyEntry]:
        labels: set[str] = set()
        for entry in entries:
            if entry.label in labels:
                raise ValueError(f"policy {entry.label!r} is listed twice: give one of them a 'name'")
            labels.add(entry.label)
        return entries

    @model_validator(mode="after")
    def _overrides_valid(self) -> Scenario:
        for entry in self.policies:
            self.load_for(entry)
        return self

    @model_validator(mode="after")
    def _checked_before_any_cluster(self) -> Scenario:
        """What used to fail only once a cluster was up: pods that do not exist, a driver that cannot
        enforce its policy."""
        targets = self.cluster.targets
        for pod in self.echo.pods:
            if int(pod.removeprefix("echo-")) >= targets:
                raise ValueError(
                    f"echo.pods names {pod}, which does not exist: cluster.targets is {targets}, so the "
                    f"echo pods are echo-0 … echo-{targets - 1}"
                )
        check_entered_nodes(self.paths, self.cluster.nodes)
        for entry in self.policies:
            _check_driver(self.load_for(entry), entry)
        return self

    @model_validator(mode="after")
    def _timeline_valid(self) -> Scenario:
        if self.events:
            limit = next(m.le for m in ClusterConfig.model_fields["targets"].metadata if hasattr(m, "le"))
            try:
                check_timeline(
                    self.events,
                    targets=self.cluster.targets,
                    max_targets=int(limit),
                    durations=[self.load_for(entry).duration for entry in self.policies],
                )
            except PlanError as exc:
                raise ValueError(str(exc)) from None
        return self

    def load_for(self, entry: PolicyEntry) -> LoadConfig:
        if not entry.load:
            return self.load
        try:
            return LoadConfig.model_validate({**self.load.model_dump(), **entry.load})
        except ValidationError as exc:
            raise ValueError(f"load of policy {entry.label!r}: {_first_error(exc, LoadConfig)}") from exc

    def dataplane_list(self) -> list[str]:
        """The dataplanes named by the scenario; ``all`` stands for every dataplane there is."""
        return list(DATAPLANES) if self.dataplanes == "all" else list(self.dataplanes)

    def cells(self) -> list[Cell]:
        """Every (dataplane, path, policy, repetition) this scenario measures, in run order.

        A cell's id is ``dataplane/policy``, or ``dataplane/path/policy`` off the default path."""
        return [
            Cell(
                id=f"{dataplane}/"
                + ("" if path == DEFAULT_PATH else f"{path}/")
                + entry.label
                + (f"#{rep + 1}" if self.repetitions > 1 else ""),
                dataplane=dataplane,
                path=path,
                policy_label=entry.label,
                policy=entry.policy,
                load=self.load_for(entry).build(),
                echo_policy=self.echo.connection_policy(entry.echo),
                repetition=rep,
                seed=None if self.seed is None else self.seed + rep,
            )
            for dataplane in self.dataplane_list()
            for path in self.paths
            for rep in range(self.repetitions)
            for entry in self.policies
        ]


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One independent measurement: a dataplane, a policy and a load.

    ``seed`` seeds the clients' randomness (jitter, random picks) per repetition; None: unseeded."""

    id: str
    dataplane: str
    policy_label: str
    policy: str
    load: Load
    path: str = "clusterip"
    """The service path (``balancebench.paths``), e.g. ``client-side:random``."""
    repetition: int = 0
    seed: int | None = None
    echo_policy: Mapping[str, Any] = field(default_factory=dict)
    """The echo pods' connection policy during this cell (``/admin/policy``); empty: leave it as is."""


def _first_error(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    error = exc.errors()[0]
    loc = error["loc"]
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        allowed = _fields_at(model or Scenario, loc[:-1])
        message = "unknown field" + (f": allowed are {', '.join(allowed)}" if allowed else "")
    elif error["type"] == "literal_error":
        message = f"{message} (got {error.get('input')!r})"
    more = len(exc.errors()) - 1
    where = ".".join(str(part) for part in loc)
    return (
        (f"{where}: " if where else "")
        + message
        + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")
    )


def _fields_at(model: type[BaseModel], path: Sequence[str | int]) -> list[str]:
    """The field names of the model found at ``path`` (list indices and dict keys step through)."""
    current: object = model
    for part in path:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            continue  # a list index or a dict key: the container's items are the same model
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: object) -> object:
    """The pydantic model an annotation holds, directly or inside list/dict/Optional/Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in reversed(get_args(annotation)):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to raw scenario data."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = [part.strip() for part in key.split(".")]
        if not sep or not all(parts):
            raise InvalidInput(f"--set {item!r}: expected key=value, e.g. --set load.duration=5s")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise InvalidInput(f"--set {item!r}: {part} is not a section")
            node = child
        node[parts[-1]] = parse_yaml(raw, what=f"--set {key.strip()}") if raw.strip() else ""
    return data


def read_scenario_text(path: Path) -> str:
    """The scenario file's text; InvalidInput for a path that is not a readable, UTF-8 file of sane size."""
    return read_text(path, what="scenario file")


def load_scenario(path: Path, *, overrides: Sequence[str] = ()) -> Scenario:
    """Read, override and validate a scenario file; InvalidInput names the file, the field and the fix."""
    data = parse_yaml(read_scenario_text(path), what=str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: a scenario is a mapping of fields (name, cluster, load, policies, …)")
    data = apply_overrides(data, overrides)
    data.setdefault("name", re.sub(r"[^a-z0-9-]", "-", path.stem.lower())[:SCENARIO_NAME_MAX].strip("-"))
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"{path}: {_first_error(exc)}") from exc
