"""The echo image's Dockerfile, checked for its essentials (no Docker engine here to build it)."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest

ECHO = Path(__file__).resolve().parents[3] / "workloads" / "echo"


def instructions() -> list[tuple[str, str]]:
    text = (ECHO / "Dockerfile").read_text().replace("\\\n", " ")
    parsed = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            parsed.append((keyword.upper(), rest.strip()))
    return parsed


def test_dockerfile_runs_the_module_as_non_root_and_exposes_both_ports() -> None:
    steps = instructions()
    keywords = [keyword for keyword, _ in steps]
    values = dict(steps)

    assert values["FROM"] == "python:3.11-slim"
    assert json.loads(values["CMD"]) == ["python", "-m", "workloads.echo"]
    assert values["EXPOSE"].split() == ["8080", "8081"]
    assert values["COPY"] == "workloads/ /app/workloads/"
    assert values["USER"] not in ("root", "0")
    assert keywords.index("USER") < keywords.index("CMD")


@pytest.mark.parametrize("package", ["aiohttp", "prometheus-client", "h2"])
def test_dockerfile_pins_every_runtime_dependency(package: str) -> None:
    installs = " ".join(
        value for keyword, value in instructions() if keyword == "RUN" and "pip install" in value
    )
    assert re.search(rf'"{package}~=\d+\.\d+\.\d+"', installs)


def test_the_package_imports_nothing_else_from_the_repository() -> None:
    """It ships alone in the image: only the standard library, aiohttp, prometheus_client, h2 and itself."""
    # hyperframe is h2's own frame layer (a dependency h2 pins), used for the GOAWAY h2 will not send
    allowed_roots = {"aiohttp", "prometheus_client", "h2", "hyperframe", "workloads", "__future__"}
    for path in ECHO.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            for root in roots - allowed_roots:
                assert root in sys.stdlib_module_names, f"{path.name} imports {root}"
