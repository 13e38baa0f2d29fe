"""Compiled artefacts built from sources in the repo on first use, cached by the source's digest.

``~/.cache/balancebench/<stem>-<digest><suffix>`` (``$XDG_CACHE_HOME`` honoured): a changed source gets a new
file, an unchanged one is built once per machine. A build writes a temporary file and renames it into place,
so a cluster starting beside it never loads half an object.

    >>> cached_build(XSTATE_SHIM, ".so", lambda out: ["cc", "-shared", "-o", str(out), ...])  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from balancebench.shell import run


def cached_path(source: Path, suffix: str) -> Path:
    """Where the build of ``source`` at its current contents lives (it may not exist yet)."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "balancebench"
    return cache / f"{source.stem}-{digest}{suffix}"


def cached_build(source: Path, suffix: str, argv: Callable[[Path], Sequence[str]]) -> Path:
    """The cached build of ``source``, made first with ``argv(output path)`` when missing (``argv`` may raise
    MissingFeature when the tool that builds it is not installed: it is asked only when a build is due)."""
    built = cached_path(source, suffix)
    if built.exists():
        return built
    built.parent.mkdir(parents=True, exist_ok=True)
    partial = built.with_name(f"{built.name}.{os.getpid()}.tmp")
    try:
        run(list(argv(partial)))
        os.replace(partial, built)
    finally:
        partial.unlink(missing_ok=True)
    return built
