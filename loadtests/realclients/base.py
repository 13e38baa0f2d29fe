"""What a real client driver is: a program in a real client library, built at set-up, that sends the requests.

Each client is one file of this package (``golang.py``, ``okhttp.py``, ``jdk.py``, ``aiohttp.py``)
holding a :class:`RealClient`; the registry in ``__init__.py`` lists them. A client says which policy
knobs its library has (the others are refused with a line naming the library), how to build its program
from ``src/`` and how to start it.

    >>> from loadtests.realclients import REAL_CLIENTS
    >>> REAL_CLIENTS["go"].missing()          # None when built, else one line saying how to get it
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.policy import PolicyError, PoolPolicy

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
BUILD = HERE / "build"
"""Built programs; ignored by git, made by ``scripts/setup.sh`` (``python -m loadtests.realclients build``).
"""


@dataclass(frozen=True, kw_only=True)
class RealClient:
    """One real client library driven as a subprocess speaking the line protocol of ``bridge``."""

    name: str
    library: str
    """What runs the requests, for reports and error lines, e.g. ``Go net/http (DefaultTransport)``."""
    packages: tuple[str, ...]
    """Debian packages that provide the toolchain and the library."""
    sources: tuple[Path, ...]
    artifact: Path
    """The built program (or class file): stale when older than a source."""
    build_tools: tuple[str, ...]
    """Commands that must be on PATH to build."""
    run_tools: tuple[str, ...] = ()
    """Commands that must be on PATH to run."""
    files: tuple[Path, ...] = ()
    """Library files that must exist to build and to run (jars)."""
    modules: tuple[str, ...] = ()
    """Python modules the program imports (it runs with this interpreter): balancebench's own dependencies,
    which ``make setup`` installs into ``.venv`` (``packages`` is then empty)."""
    build_argv: Callable[[], list[str]]
    build_env: Mapping[str, str] = field(default_factory=dict)
    run_argv: Callable[[PoolPolicy, str, float, float], list[str]]
    """argv for (policy, base URL, connect timeout, network timeout)."""
    unsupported: Callable[[PoolPolicy], str | None] = field(default=lambda policy: None)
    """A policy knob the library does not have, as one line; None when it can follow the policy."""

    def check(self, policy: PoolPolicy) -> None:
        """PolicyError when the library cannot follow ``policy``."""
        problem = self.unsupported(policy)
        if problem is not None:
            raise PolicyError(f"driver {self.name} ({self.library}) {problem}")

    def toolchain_missing(self, *, build: bool = True) -> str | None:
        """What is missing to build (or only run) this client, as one line saying how to get it."""
        tools = (*self.build_tools, *self.run_tools) if build else self.run_tools
        absent = [tool for tool in tools if shutil.which(tool) is None]
        absent += [str(path) for path in self.files if not path.exists()]
        modules = [module for module in self.modules if importlib.util.find_spec(module) is None]
        if modules:
            return (
                f"driver {self.name} needs the Python module {', '.join(modules)}: run 'make setup' "
                f"(installs balancebench's dependencies into .venv), or 'pip install {' '.join(modules)}'"
            )
        if absent:
            packages = " ".join(self.packages)
            return (
                f"driver {self.name} needs {', '.join(absent)}: run 'make setup' "
                f"(installs Debian's {packages}), or 'apt-get install {packages}'"
            )
        return None

    def missing(self) -> str | None:
        """Why this driver cannot run now, as one line saying how to fix it; None when it can."""
        if self.stale():
            toolchain = self.toolchain_missing()
            if toolchain is not None:
                return toolchain
            return f"driver {self.name} is not built (or older than its source): run 'make setup'"
        return self.toolchain_missing(build=False)

    def stale(self) -> bool:
        if not self.artifact.exists():
            return True
        built = self.artifact.stat().st_mtime
        return any(source.stat().st_mtime > built for source in self.sources)

    def build(self) -> None:
        """Build the program from ``src/``; PolicyError with the compiler's last line when it fails."""
        BUILD.mkdir(exist_ok=True)
        argv = self.build_argv()
        env = {**os.environ, **self.build_env}
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600, env=env)
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise PolicyError(f"building driver {self.name} failed: {' '.join(argv)}: {last[0]}")
        self.artifact.touch()

    def command(
        self, policy: PoolPolicy, base_url: str, connect_timeout: float, network_timeout: float
    ) -> list[str]:
        return self.run_argv(policy, base_url, connect_timeout, network_timeout)


def unsupported_knobs(policy: PoolPolicy, knobs: Sequence[str]) -> str | None:
    """The first of ``knobs`` (policy field names) that ``policy`` sets, as 'has no <knob> setting'."""
    names = {
        "max_age": "max-age",
        "max_requests": "max-requests",
        "max_connections": "max-conns",
        "max_idle": "max-idle",
    }
    for knob in knobs:
        if getattr(policy, knob) is not None:
            return f"has no {names[knob]} setting: drop {names[knob]}=… or use --driver policy"
    return None
