"""The run manifest, ``RUN_DIR/run.json``: what ran (scenario, cells, pods, load) so records can be judged.

The runner writes it with :func:`write_run`; analysis reads it with :func:`load_run`. Every model accepts and
keeps keys it does not know, so later issues can add fields (scale or fault events) without breaking readers.

``run.json``, schema 1::

    {"schema": 1, "scenario": "seed", "scenario_file": "loadtests/scenarios/seed.yaml",
     "started": "2026-11-24T18:00:00Z", "finished": "…", "provider": "netns", "host": {"cpus": 2},
     "cells": [{"cell": "nftables/okhttp", "dataplane": "nftables", "policy": "okhttp",
                "policy_spec": "max-idle=5,idle=5m", "driver": "policy", "path": "clusterip", "repetition": 0,
                "load": {"model": "closed", "driver": "policy", "users_per_source": 1, "think_time_s": 0.0,
                         "burst": null, "pause_s": null, "rate": null, "duration_s": 20.0, "warmup_s": 2.0,
                         "url_path": "/"},
                "open_loop": false, "concurrency": 2,
                "target_pods": [{"name": "echo-0", "node": "node-0"}],
                "source_pods": [{"name": "source-0", "node": "node-0"}],
                "server_requests": 12345, "started": "…", "finished": "…"}]}

``events`` (when the scenario has ``events:``) lists each change under load as it ran: ``{"kind": "scale",
"description": "scale to 9", "at_s": 5.0, "started": 1764650000.1, "finished": 1764650001.2,
"load_started": 1764649995.0, "detail": {"pods_added": ["echo-6", …], "pods_removed": []}, "error": null}``.

``target_pods`` lists every endpoint the Service had during the cell, including pods that got no request:
they count, with share 0, in every balance metric. ``server_requests`` is the delta of the echo servers'
``/metrics`` request totals over the cell (null when unknown). ``concurrency`` is the number of connections
a perfectly kept-alive client would use (the ideal "sockets used").
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from analysis.errors import AnalysisError

RUN_SCHEMA_VERSION = 1
RUN_FILE = "run.json"
"""Name of the manifest file inside a run directory."""


class _Model(BaseModel):
    """Frozen, keyword-only, tolerant of extra keys (kept on write) — the shape of every manifest part."""

    model_config = ConfigDict(extra="allow", frozen=True, validate_by_name=True, validate_by_alias=True)


class PodRef(_Model):
    """A pod by name and the node it ran on."""

    name: str = Field(min_length=1)
    node: str | None = None


class HostInfo(_Model):
    """The machine that generated the load (more keys allowed: kernel, cpu model …)."""

    cpus: int | None = Field(default=None, ge=1)


class KernelRef(_Model):
    """The kernel the cluster's nodes ran their networking on: ``host`` or ``uml``, and its release."""

    name: str = Field(min_length=1)
    release: str | None = None


class LoadSpec(_Model):
    """How a cell's load was generated: closed loop (users with think time) or open loop (a rate).

    The plain schema of ``loadtests.load.Load.manifest()`` (analysis imports nothing of the repo); its
    other keys (``driver``, ``url_path``) are kept as written."""

    model: str = "closed"
    users_per_source: int | None = Field(default=None, ge=0)
    think_time_s: float | None = Field(default=None, ge=0)
    pause_s: float | None = Field(default=None, ge=0)
    burst: int | None = Field(default=None, ge=0)
    rate: float | None = Field(default=None, ge=0)
    duration_s: float | None = Field(default=None, ge=0)
    warmup_s: float | None = Field(default=None, ge=0)


class EventRecord(_Model):
    """A change under load as it happened: planned ``at_s`` from the cell's first request, wall-clock
    ``started``/``finished`` (epoch s, null when the cell ended first), and what it changed (``detail``:
    ``pods_added``, ``pods_removed``, ``pod``, ``latency_ms`` …). ``load_started`` is when the servers
    answered the cell's first request, as the runner saw it."""

    kind: str = Field(min_length=1)
    description: str = ""
    at_s: float = Field(ge=0)
    started: float | None = None
    finished: float | None = None
    load_started: float | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class CellMeta(_Model):
    """One scenario cell (dataplane × policy × load); its ``cell`` id matches the records' ``cell`` column.

    >>> CellMeta(cell="nftables/okhttp", dataplane="nftables", policy="okhttp", concurrency=2,
    ...          target_pods=[PodRef(name="echo-0")]).policy
    'okhttp'
    """

    cell: str = Field(min_length=1)
    dataplane: str
    policy: str
    kernel: KernelRef | None = None
    policy_spec: str | None = None
    driver: str | None = None
    path: str = "clusterip"
    decision: str | None = Field(default=None, exclude_if=lambda decision: decision is None)
    """Where the service path makes the balancing decision, one sentence; None in older runs."""
    proxy: str | None = Field(default=None, exclude_if=lambda proxy: proxy is None)
    """The proxy between clients and pods on this cell's path (``nginx``, ``haproxy``); None: no proxy."""
    server_connections: dict[str, int] | None = Field(
        default=None, exclude_if=lambda connections: connections is None
    )
    """Connections each echo pod accepted during the cell, by its own count; behind a proxy these are the
    proxy's connections to the pods."""
    repetition: int = Field(default=0, ge=0)
    load: LoadSpec = Field(default_factory=LoadSpec)
    open_loop: bool = False
    concurrency: int | None = Field(default=None, ge=1)
    target_pods: tuple[PodRef, ...] = ()
    source_pods: tuple[PodRef, ...] = ()
    server_requests: int | None = Field(default=None, ge=0)
    started: datetime | None = None
    finished: datetime | None = None
    events: tuple[EventRecord, ...] = Field(default=(), exclude_if=lambda events: not events)
    """The scenario's changes under load, in the order they ran (empty without ``events:``)."""
    complete: bool | None = Field(default=None, exclude_if=lambda complete: complete is None)
    """False for a cell cut short (Ctrl-C, SIGTERM, an error): its records are kept, reported as partial.
    None (not recorded, as in older runs) counts as complete."""

    @field_validator("target_pods", "source_pods")
    @classmethod
    def _unique_names(cls, pods: tuple[PodRef, ...]) -> tuple[PodRef, ...]:
        names = [pod.name for pod in pods]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"pod listed twice: {', '.join(duplicates)}")
        return pods


class Run(_Model):
    """A whole run: scenario, host and the cells in the order they ran.

    >>> Run(scenario="seed", cells=[]).schema_version
    1
    """

    schema_version: int = Field(default=RUN_SCHEMA_VERSION, alias="schema")
    scenario: str
    scenario_file: str | None = None
    started: datetime | None = None
    finished: datetime | None = None
    provider: str | None = None
    host: HostInfo = Field(default_factory=HostInfo)
    cells: tuple[CellMeta, ...] = ()

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, version: int) -> int:
        if version != RUN_SCHEMA_VERSION:
            raise ValueError(
                f"schema {version} is not supported: this balancebench reads run.json schema "
                f"{RUN_SCHEMA_VERSION}; use the balancebench version that wrote the run"
            )
        return version

    @model_validator(mode="after")
    def _unique_cells(self) -> Run:
        ids = [cell.cell for cell in self.cells]
        duplicates = sorted({cell for cell in ids if ids.count(cell) > 1})
        if duplicates:
            raise ValueError(f"cell id used twice: {', '.join(duplicates)}")
        return self

    def cell(self, cell_id: str) -> CellMeta:
        """The cell with this id; ``KeyError`` when the run has none."""
        for cell in self.cells:
            if cell.cell == cell_id:
                return cell
        raise KeyError(cell_id)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types, keys as written in run.json (``schema``, not ``schema_version``)."""
        return self.model_dump(mode="json", by_alias=True)


def load_run(run_dir: str | os.PathLike[str]) -> Run:
    """Read and validate ``RUN_DIR/run.json``; bad or missing input raises one-line :class:`AnalysisError`.

    >>> run = load_run("results/seed-20261124")   # doctest: +SKIP
    """
    path = run_path(run_dir) / RUN_FILE
    if not path.is_file():
        raise AnalysisError(
            f"{run_dir} has no {RUN_FILE}: pass a run directory written by 'balancebench run'"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise AnalysisError(f"cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise AnalysisError(
            f"{path} is not valid JSON (line {exc.lineno}: {exc.msg}): fix or re-run"
        ) from exc
    return parse_run(data, source=str(path))


def parse_run(data: object, *, source: str = RUN_FILE) -> Run:
    """Validate already-decoded run.json data; ``source`` names it in the error message."""
    if not isinstance(data, dict):
        raise AnalysisError(f"{source} must hold a JSON object, got {type(data).__name__}")
    try:
        return Run.model_validate(data)
    except ValidationError as exc:
        raise AnalysisError(f"{source} is not a valid run manifest: {_first_error(exc)}") from exc


def write_run(run_dir: str | os.PathLike[str], run: Run) -> Path:
    """Write ``RUN_DIR/run.json`` atomically (a reader never sees half a file); returns its path.

    >>> write_run(out_dir, run.model_copy(update={"finished": now}))   # doctest: +SKIP
    """
    directory = Path(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    return write_json_atomically(directory / RUN_FILE, run.to_json())


def run_path(run_dir: str | os.PathLike[str]) -> Path:
    """The run directory as a Path, checked to exist."""
    directory = Path(run_dir)
    if not directory.exists():
        raise AnalysisError(
            f"run directory {run_dir} does not exist: pass a directory written by 'balancebench run'"
        )
    if not directory.is_dir():
        raise AnalysisError(
            f"{run_dir} is not a directory: pass a run directory written by 'balancebench run'"
        )
    return directory


def write_json_atomically(path: Path, data: object) -> Path:
    """Write JSON through a temporary file and a rename; NaN or Infinity is a bug, not valid output."""
    text = json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    write_text_atomically(path, text)
    return path


def write_text_atomically(path: Path, text: str) -> Path:
    """Write text through a temporary file in the same directory and a rename."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "top level"
    message = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {message}{more}"
