"""An ordered plan of what bringing a cluster up does: commands, rendered configs, Kubernetes API calls.

The kind and existing providers build the plan first and then carry it out step by step, so
``--dry-run`` prints exactly what a real run would do, touching nothing (after kind's ordered create
actions). ``{workdir}`` in a step stands for the run's private temporary folder.

    >>> plan = Plan(cluster="dev", provider="kind", steps=(Command(argv=("kind", "version"), why="check"),))
    >>> print(plan.render())
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

import yaml

WORKDIR = "{workdir}"
"""Placeholder for the run's temporary folder in commands and config paths."""


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (kubeadm patches) as ``|`` blocks, so the plan reads like the file it writes."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_BlockDumper.add_representer(str, _represent_str)


def dump_yaml(content: object) -> str:
    """YAML as balancebench writes it: keys in order, multi-line strings as blocks."""
    return yaml.dump(content, Dumper=_BlockDumper, sort_keys=False)


@dataclass(frozen=True, kw_only=True)
class Command:
    """A program to run (through ``balancebench.shell``); ``stdout_to`` saves its output as a file."""

    argv: tuple[str, ...]
    why: str
    stdout_to: str | None = None
    timeout: float = 600.0

    def resolved(self, workdir: str) -> list[str]:
        return [arg.replace(WORKDIR, workdir) for arg in self.argv]

    def render(self) -> str:
        line = shlex.join(self.argv)
        return f"$ {line}" + (f" > {self.stdout_to}" if self.stdout_to else "")


@dataclass(frozen=True, kw_only=True)
class Config:
    """A rendered config written to ``path`` (under ``{workdir}``) before the commands that read it."""

    path: str
    content: dict[str, Any]
    why: str

    def text(self) -> str:
        return dump_yaml(self.content)

    def render(self) -> str:
        body = "\n".join(f"    {line}" for line in self.text().rstrip().splitlines())
        return f"write {self.path}:\n{body}"


@dataclass(frozen=True, kw_only=True)
class ApiCall:
    """One Kubernetes API request: create, patch, delete, read, list or watch an object kind."""

    verb: str
    kind: str
    name: str = ""
    namespace: str = ""
    why: str
    body: dict[str, Any] | None = field(default=None, compare=False)
    until: str = ""
    """For ``watch``: the condition that ends it."""

    def render(self) -> str:
        where = f" -n {self.namespace}" if self.namespace else ""
        line = f"API {self.verb} {self.kind}{' ' + self.name if self.name else ''}{where}"
        if self.until:
            line += f" until {self.until}"
        if self.body is not None:
            body = dump_yaml(self.body).rstrip()
            line += ":\n" + "\n".join(f"    {text}" for text in body.splitlines())
        return line


Step = Command | Config | ApiCall


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What ``up`` does, in order, and what ``down`` undoes; ``notes`` say what this machine lacks."""

    cluster: str
    provider: str
    steps: tuple[Step, ...]
    teardown: tuple[Step, ...] = ()
    notes: tuple[str, ...] = ()

    def commands(self) -> list[Command]:
        return [step for step in self.steps if isinstance(step, Command)]

    def configs(self) -> dict[str, Config]:
        return {step.path: step for step in self.steps if isinstance(step, Config)}

    def api_calls(self) -> list[ApiCall]:
        return [step for step in self.steps if isinstance(step, ApiCall)]

    def render(self) -> str:
        lines = [f"plan for cluster {self.cluster} (provider {self.provider}): nothing below has run"]
        lines += [f"  note: {note}" for note in self.notes]
        for number, step in enumerate(self.steps, 1):
            lines.append(f"{number:>3}. {step.why}")
            lines += [f"     {text}" for text in step.render().splitlines()]
        if self.teardown:
            lines.append("  at the end (unless --keep):")
            for step in self.teardown:
                lines.append(f"     {step.render()}   # {step.why}")
        return "\n".join(lines)
