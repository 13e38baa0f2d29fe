"""The one helper every shell-out goes through (after kind's pkg/exec).

A failure raises :class:`~balancebench.errors.CommandError` carrying the command line, its combined
output and exit code, so every error message can be pasted back into a shell.

    >>> run(["ip", "netns", "list"]).stdout
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence

from balancebench.errors import CommandError


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    timeout: float | None = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion, capturing stdout and stderr as text; raise CommandError on failure."""
    args = list(argv)
    try:
        done = subprocess.run(
            args,
            input=input,
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CommandError(args, 127, f"{args[0]}: command not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(args, -1, f"timed out after {timeout}s") from exc
    if check and done.returncode != 0:
        raise CommandError(args, done.returncode, (done.stdout or "") + (done.stderr or ""))
    return done
