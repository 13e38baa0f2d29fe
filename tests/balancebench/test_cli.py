"""The CLI's shape: every command has help text; usage errors are one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer

from balancebench import cli


def _commands() -> list[tuple[str, object]]:
    cli._register_commands()
    root = typer.main.get_command(cli.app)
    found: list[tuple[str, object]] = []

    def walk(prefix: str, command: object) -> None:
        found.append((prefix, command))
        for name, child in getattr(command, "commands", {}).items():
            walk(f"{prefix} {name}".strip(), child)

    walk("", root)
    return found


def test_every_command_has_help_text() -> None:
    commands = _commands()
    assert {"run", "cluster up", "cluster down", "report", "compare"} <= {name for name, _ in commands}
    for name, command in commands:
        help_text = (getattr(command, "help", None) or "").strip()
        assert help_text, f"'balancebench {name}' has no help text"
        for param in getattr(command, "params", []):
            if param.param_type_name == "option" and param.name != "help":
                assert (param.help or "").strip(), f"'balancebench {name}' option {param.name} has no help"


@pytest.mark.parametrize(
    "argv",
    [["no-such-command"], ["run"], ["run", "x.yaml", "--no-such-flag"], ["cluster", "up", "--nodes", "zero"]],
)
def test_usage_errors_are_one_line_exit_2(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "balancebench", *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
