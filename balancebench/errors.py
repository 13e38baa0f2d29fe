"""The exception tree of balancebench, drawn once, and the one map of foreign errors onto it.

    BalancebenchError          anything the CLI turns into one line on stderr (exit_code says which code)
    ├── InvalidInput           bad input: a flag, spec, scenario, path or unknown pod (exit 2)
    │   └── MissingFeature     this machine lacks a kernel feature or tool the request needs (exit 2)
    ├── ClusterError           a cluster operation failed at run time (exit 1)
    │   └── CommandError       a shell-out failed; carries the command, its output and exit code (exit 1)
    └── RunError               a benchmark run failed at run time (exit 1)

    mapped by user_error() at the CLI boundary (each becomes InvalidInput, exit 2):
    analysis.errors.AnalysisError      analysis/ imports nothing of balancebench, so it has its own root
    loadtests.policy.PolicyError       likewise for loadtests/ (a bad pool policy or driver)
    pydantic.ValidationError           a model refused a value (first error, located)
    yaml.YAMLError, UnicodeError       a file or --set value that is not UTF-8 YAML
    OSError with a file name           a path the user gave: missing, a directory, read-only, too long …

``workloads/`` ships alone and keeps its own ``ConfigError`` (the echo server exits 2 on it). Anything
else reaching the boundary is a programming error: the CLI prints its traceback and asks for a report.
Code that knows better context still translates where it catches (``raise InvalidInput(…) from exc``).
"""

from __future__ import annotations

BUG_HINT = "this is a bug in balancebench: please report it with the command you ran and the traceback above"
"""What the CLI adds under the traceback of a programming error."""


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


def user_error(exc: BaseException) -> BalancebenchError | None:
    """The one-line error a user can act on for ``exc``, or None when ``exc`` is a programming error.

    >>> user_error(IsADirectoryError(21, "Is a directory", "results"))
    InvalidInput('results: is a directory')
    """
    if isinstance(exc, BalancebenchError):
        return exc
    from analysis.errors import AnalysisError
    from loadtests.policy import PolicyError

    if isinstance(exc, AnalysisError | PolicyError):
        return InvalidInput(str(exc))
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        return InvalidInput(f"{exc.title}: {where + ': ' if where else ''}{message}")
    import yaml

    if isinstance(exc, yaml.YAMLError):
        return InvalidInput(f"not valid YAML: {getattr(exc, 'problem', None) or exc}")
    if isinstance(exc, UnicodeError):
        return InvalidInput(f"not UTF-8 text: {exc}")
    if isinstance(exc, OSError) and exc.filename is not None:
        reason = (exc.strerror or str(exc)).lower()
        other = f" -> {exc.filename2}" if exc.filename2 is not None else ""
        return InvalidInput(f"{_shorten(str(exc.filename))}{other}: {reason}")
    return None


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
