"""Scenario files: a pydantic model of one benchmark matrix and its expansion into cells.

A scenario names the cluster, the echo pods' options, the load, the client pool policies and the dataplanes;
``cells()`` expands dataplanes × policies × repetitions into the independent units a run measures.

    >>> scenario = load_scenario(Path("loadtests/scenarios/seed.yaml"), overrides=["load.duration=5s"])
    >>> [cell.id for cell in scenario.cells()]
    ['nftables/okhttp', 'nftables/okhttp-1s', …]

Every validation error is one line naming the file, the field and the allowed values (``InvalidInput``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from balancebench.clusters import registry
from balancebench.clusters.base import DATAPLANES
from balancebench.errors import InvalidInput


def parse_duration(value: object) -> float:
    """Seconds from ``250ms``, ``1.5s``, ``2m``, ``1h`` or a bare number of seconds (zero allowed)."""
    from loadtests.policy import PolicyError
    from loadtests.policy import parse_duration as parse_text

    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '250ms', '20s' or '2m', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"must not be negative, got {value!r}")
        return float(value)
    try:
        return parse_text(str(value), what="the value", allow_zero=True)
    except PolicyError as exc:
        raise ValueError(str(exc)) from None


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written in YAML as ``250ms``, ``20s``, ``2m`` or a number."""

Dataplane = Literal["nftables", "iptables", "ipvs", "ebpf"]
assert set(Dataplane.__args__) == set(DATAPLANES)  # type: ignore[attr-defined]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClusterConfig(_Strict):
    """Where the load runs: a provider (``auto``: the first that runs here) and the topology."""

    provider: str = registry.AUTO
    nodes: int = Field(2, ge=1, le=16)
    targets: int = Field(6, ge=1, le=64)
    sources: int = Field(2, ge=1, le=16)

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

    latency: Duration = 0.0
    latency_jitter: Duration = 0.0
    error_rate: float = Field(0.0, ge=0.0, le=1.0)
    cpu_ms: float = Field(0.0, ge=0.0)

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

    max_requests_per_connection: int | None = Field(None, ge=1)
    max_connection_age: Duration | None = None
    max_connection_age_jitter: float = Field(0.0, ge=0.0, lt=1.0)
    idle_timeout: Duration | None = None
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
        if self.idle_timeout:
            flags += ["--idle-timeout", f"{self.idle_timeout}s"]
        return tuple(flags)

    def pod_flags(self) -> dict[str, tuple[str, ...]]:
        return {name: faults.flags() for name, faults in self.pods.items()}


class LoadConfig(_Strict):
    """How clients send: closed loop (users × think time, or on/off bursts) or open loop (a rate)."""

    model: Literal["closed", "open"] = "closed"
    driver: Literal["policy", "httpx", "requests", "go", "okhttp"] = "policy"
    users_per_source: int = Field(1, ge=1, le=1000)
    think_time: Duration = 0.0
    burst: int | None = Field(None, ge=1)
    pause: Duration | None = None
    rate: float | None = Field(None, gt=0)
    duration: Duration = 15.0
    warmup: Duration = 2.0

    @model_validator(mode="after")
    def _consistent(self) -> LoadConfig:
        if self.duration <= 0:
            raise ValueError("duration: must be positive, e.g. '15s'")
        if self.warmup >= self.duration:
            raise ValueError(f"warmup ({self.warmup:g}s) must be shorter than duration ({self.duration:g}s)")
        if self.model == "open" and self.rate is None:
            raise ValueError("model 'open' needs rate: requests per second over all sources, e.g. 500")
        if self.model == "closed" and self.rate is not None:
            raise ValueError(
                "rate is for model 'open'; a closed loop is set by users_per_source and think_time"
            )
        if (self.burst is None) != (self.pause is None):
            raise ValueError("burst and pause go together: 'burst: 5, pause: 1.5s' sends 5 then idles 1.5 s")
        return self


class PolicyEntry(_Strict):
    """One client pool policy to measure, with an optional display name and load override."""

    policy: str
    name: str | None = None
    load: dict[str, Any] = Field(default_factory=dict)

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


def _default_dataplanes() -> list[Dataplane]:
    return ["nftables"]


def _policy_entry(value: object) -> object:
    return {"policy": value} if isinstance(value, str) else value


class Scenario(_Strict):
    """A benchmark matrix: dataplanes × policies × repetitions on one cluster shape."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    cluster: ClusterConfig = ClusterConfig()
    dataplanes: list[Dataplane] | Literal["all"] = Field(default_factory=_default_dataplanes, min_length=1)
    """The dataplanes to measure, or ``all``: every one this machine has (the runner resolves it)."""
    path: Literal["clusterip"] = "clusterip"
    echo: EchoConfig = EchoConfig()
    load: LoadConfig = LoadConfig()
    policies: list[Annotated[PolicyEntry, BeforeValidator(_policy_entry)]] = Field(min_length=1)
    repetitions: int = Field(1, ge=1, le=100)
    seed: int | None = None

    @field_validator("dataplanes", mode="before")
    @classmethod
    def _known_dataplanes(cls, value: object) -> object:
        choices = f"{', '.join(DATAPLANES)}, or all"
        if value == "all":
            return value
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise ValueError(f"list the dataplanes to measure, e.g. [nftables, ebpf], from {choices}")
        for name in value:
            if name not in DATAPLANES:
                raise ValueError(f"unknown dataplane {name!r}: choose from {choices}")
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
        """Every (dataplane, policy, repetition) this scenario measures, in run order."""
        return [
            Cell(
                id=f"{dataplane}/{entry.label}" + (f"#{rep + 1}" if self.repetitions > 1 else ""),
                dataplane=dataplane,
                policy_label=entry.label,
                policy=entry.policy,
                load=self.load_for(entry),
                repetition=rep,
            )
            for dataplane in self.dataplane_list()
            for rep in range(self.repetitions)
            for entry in self.policies
        ]


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One independent measurement: a dataplane, a policy and a load."""

    id: str
    dataplane: str
    policy_label: str
    policy: str
    load: LoadConfig
    repetition: int


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
        if not sep or not key.strip():
            raise InvalidInput(f"--set {item!r}: expected key=value, e.g. --set load.duration=5s")
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise InvalidInput(f"--set {item!r}: {part} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return data


def load_scenario(path: Path, *, overrides: Sequence[str] = ()) -> Scenario:
    """Read, override and validate a scenario file; InvalidInput names the file, the field and the fix."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise InvalidInput(f"{path}: no such scenario file") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise InvalidInput(f"{path}:{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: a scenario is a mapping of fields (name, cluster, load, policies, …)")
    data = apply_overrides(data, overrides)
    data.setdefault("name", re.sub(r"[^a-z0-9-]", "-", path.stem.lower()))
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"{path}: {_first_error(exc)}") from exc
