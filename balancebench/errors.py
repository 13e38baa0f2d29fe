"""The exception tree of balancebench, drawn once.

    BalancebenchError          anything the CLI turns into one line on stderr (exit_code says which code)
    ├── InvalidInput           bad input: a flag, spec, scenario or unknown pod (exit 2)
    │   └── MissingFeature     this machine lacks a kernel feature or tool the request needs (exit 2)
    ├── ClusterError           a cluster operation failed at run time (exit 1)
    │   └── CommandError       a shell-out failed; carries the command, its output and exit code (exit 1)
    └── RunError               a benchmark run failed at run time (exit 1)

Third-party exceptions (pydantic, subprocess, OSError) are translated where they are caught, with
``raise … from exc``, so the CLI boundary only ever sees this tree.
"""

from __future__ import annotations


class BalancebenchError(Exception):
    """Base of every error the CLI reports as one line."""

    exit_code = 1


class InvalidInput(BalancebenchError):
    """Bad input: what is wrong and how to fix it, in one sentence."""

    exit_code = 2


class MissingFeature(InvalidInput):
    """The machine lacks something the request needs (a kernel feature, a tool, a privilege)."""


class ClusterError(BalancebenchError):
    """A cluster operation failed at run time."""


class CommandError(ClusterError):
    """A command run by balancebench failed; printable as a line you can paste into a shell."""

    def __init__(self, argv: list[str], returncode: int, output: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.output = output
        super().__init__(self._describe())

    def pretty_command(self) -> str:
        import shlex

        return shlex.join(self.argv)

    def _describe(self) -> str:
        last = self.output.strip().splitlines()[-1] if self.output.strip() else "no output"
        return f"command failed (exit {self.returncode}): {self.pretty_command()}: {last}"


class RunError(BalancebenchError):
    """A benchmark run failed at run time."""
