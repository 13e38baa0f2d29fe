"""The balancebench command line: a thin layer over the library.

Every command is a few lines calling the library. ``main`` is the one error boundary: every failure a user
can cause (see ``balancebench.errors.user_error``) becomes one line on stderr with exit code 2 for bad input
(1 for run-time failures), never a traceback; a programming error keeps its traceback and asks for a report.

    $ balancebench cluster up --name dev --nodes 2 --targets 6 --sources 2
    $ balancebench run loadtests/scenarios/seed.yaml
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from types import FrameType

import typer

try:  # typer >= 0.20 vendors its own click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on the system click
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

from balancebench.errors import BUG_HINT, user_error

app = typer.Typer(
    name="balancebench",
    help="Measure how Kubernetes Service load balancing spreads kept-alive HTTP traffic over pods.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root() -> None:
    """Measure how Kubernetes Service load balancing spreads kept-alive HTTP traffic over pods."""


_registered = False


def _register_commands() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    # Imported here so `balancebench --help` and each command load only what they need at call time.
    # One line per command group; each group lives in balancebench/commands/<group>.py.
    from balancebench.commands import cluster, report, run, ui

    app.registered_commands += run.app.registered_commands
    app.registered_commands += report.app.registered_commands
    app.registered_commands += ui.app.registered_commands
    app.add_typer(cluster.app, name="cluster")


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered as a KeyboardInterrupt so that it is handled exactly like Ctrl-C: a run keeps the
    cell in flight (marked incomplete) and reports it, clusters are taken down, nothing is left behind."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Only the first one interrupts: the teardown it starts must be able to finish. A Python handler (not
    # SIG_IGN) so that programs started during the teardown get the default disposition back on exec.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    _terminated.set()
    raise Terminated()


_terminated = threading.Event()
"""Set once SIGTERM arrived: typer reports every KeyboardInterrupt as exit code 130, this tells them apart."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and turn every expected failure into one line and an exit code."""
    _register_commands()
    in_main_thread = threading.current_thread() is threading.main_thread()
    _terminated.clear()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        return _main(argv)
    finally:
        if in_main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    try:
        result = app(args=argv, prog_name="balancebench", standalone_mode=False)
    except typer.Exit as exc:
        result = exc.exit_code
    except click_exceptions.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        print(f"balancebench: {_one_line(exc.format_message())}{hint}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, typer.Abort):
        result = 130
    except Exception as exc:
        # The one boundary: every failure a user can cause is one line; anything else is our bug.
        error = user_error(exc)
        if error is None:
            traceback.print_exc()
            print(f"balancebench: {type(exc).__name__}: {BUG_HINT}", file=sys.stderr)
            return 1
        print(f"balancebench: {_one_line(str(error))}", file=sys.stderr)
        return error.exit_code
    if result == 130:  # typer turns any KeyboardInterrupt into a quiet exit code 130
        if _terminated.is_set():
            print("balancebench: terminated (SIGTERM)", file=sys.stderr)
            return 128 + signal.SIGTERM
        print("balancebench: interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


def _one_line(message: str) -> str:
    """A message as one line: whatever follows its first line break is folded in, never printed apart."""
    return " ".join(part.strip() for part in message.strip().splitlines() if part.strip()) or "failed"
