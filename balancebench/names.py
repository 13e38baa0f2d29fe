"""Names a user gives (clusters, scenarios, policy labels) and the one way a path is built from them.

A name typed on the command line or in a scenario becomes part of a file name (``RUNTIME_DIR/<name>.log``,
``results/<stamp>-<scenario>/``, a cgroup ``balancebench-<name>``). Every such path is built by
:func:`own_path`, which refuses anything but one plain file name inside the tool's own directory, so no
input can reach a file elsewhere (``../x``, ``/etc/passwd``, a NUL byte, a name longer than a file name).

    >>> own_path(Path("/run/balancebench"), check_cluster_name("dev") + ".log")
    PosixPath('/run/balancebench/dev.log')
    >>> check_cluster_name("../x")
    Traceback (most recent call last):
    balancebench.errors.InvalidInput: invalid cluster name '../x': use 1-32 lowercase letters, …
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from balancebench.errors import InvalidInput

CLUSTER_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?")
"""1-32 lowercase letters, digits and '-', starting and ending with a letter or digit (a DNS label, short
enough that every file and cgroup named after it fits in a file name)."""

SCENARIO_NAME_MAX = 64
"""A scenario name becomes part of a run directory's name: kept well inside a file name's 255 bytes."""

NAME_MAX = 255
"""Bytes in one file name on Linux file systems (``NAME_MAX``)."""


def check_cluster_name(name: str) -> str:
    """``name`` if it is a valid cluster name, else InvalidInput saying what a name may hold."""
    if not isinstance(name, str) or CLUSTER_NAME.fullmatch(name) is None:
        shown = repr(name) if len(repr(name)) <= 60 else repr(name)[:57] + "…"
        raise InvalidInput(
            f"invalid cluster name {shown}: use 1-32 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def own_path(directory: Path, leaf: str) -> Path:
    """``directory / leaf``, provided ``leaf`` is one plain file name that stays inside ``directory``.

    Refuses separators, ``.``/``..``, NUL bytes and names longer than a file name may be; the result's
    parent is ``directory`` itself, which the final check proves rather than assumes."""
    if not leaf or leaf in (".", "..") or "/" in leaf or "\0" in leaf or len(os.fsencode(leaf)) > NAME_MAX:
        raise InvalidInput(f"{leaf[:60]!r} is not a plain file name inside {directory}")
    path = directory / leaf
    if path.parent != directory or os.path.normpath(path) != str(path):
        raise InvalidInput(f"{leaf[:60]!r} is not a plain file name inside {directory}")
    return path
