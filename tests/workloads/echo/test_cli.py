"""Flags and ECHO_* env vars: what they set, and one clear line with exit 2 when they are wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from workloads.echo.cli import parse_args
from workloads.echo.config import ConfigError, ConnectionPolicy, EchoConfig, Faults

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, EchoConfig()),
        (
            ["--port", "0", "--admin-port", "0", "--host", "127.0.0.1"],
            {},
            EchoConfig(host="127.0.0.1", port=0, admin_port=0),
        ),
        (
            ["--max-requests-per-connection", "10", "--max-connection-age", "1.5s"],
            {"ECHO_MAX_CONNECTION_AGE_JITTER": "0.1", "ECHO_IDLE_TIMEOUT": "2m"},
            EchoConfig(
                policy=ConnectionPolicy(
                    max_requests_per_connection=10,
                    max_connection_age_s=1.5,
                    max_connection_age_jitter=0.1,
                    idle_timeout_s=120.0,
                )
            ),
        ),
        (
            ["--latency", "250ms", "--cpu-ms", "2"],
            {"ECHO_LATENCY": "9s", "ECHO_LATENCY_JITTER": "0.01", "ECHO_ERROR_RATE": "0.5"},
            EchoConfig(faults=Faults(latency_ms=250, latency_jitter_ms=10, error_rate=0.5, cpu_ms=2)),
        ),
        (
            ["--not-ready", "--shutdown-timeout", "3"],
            {"ECHO_LOG_REQUESTS": "true"},
            EchoConfig(ready=False, shutdown_timeout_s=3.0, log_requests=True),
        ),
        ([], {"ECHO_NOT_READY": "0", "ECHO_MAX_CONNECTION_AGE": "off"}, EchoConfig()),
        ([], {"ECHO_PORT": "9000", "ECHO_ADMIN_PORT": "9001"}, EchoConfig(port=9000, admin_port=9001)),
    ],
    ids=["defaults", "ports", "policies", "faults-flag-wins", "lifecycle", "env-off", "env-ports"],
)
def test_flags_and_env_make_the_config(argv: list[str], env: dict[str, str], expected: EchoConfig) -> None:
    assert parse_args(argv, env) == expected


BAD = [
    (["--max-connection-age", "-1s"], {}, "--max-connection-age must not be negative"),
    (["--max-connection-age", "0"], {}, "--max-connection-age must be > 0"),
    (["--max-connection-age", "soon"], {}, "--max-connection-age: invalid duration 'soon'"),
    (["--error-rate", "1.5"], {}, "--error-rate is a probability between 0 and 1"),
    (["--error-rate", "lots"], {}, "--error-rate must be a number"),
    (["--bogus"], {}, "unrecognized arguments: --bogus"),
    (["--max-connection-age-jitter", "1"], {}, "--max-connection-age-jitter is a fraction in [0, 1)"),
    (["--max-requests-per-connection", "0"], {}, "--max-requests-per-connection must be ≥ 1"),
    (["--port", "70000"], {}, "--port must be between 0 and 65535"),
    (["--port", "8080", "--admin-port", "8080"], {}, "port and admin_port must differ"),
    (["--cpu-ms", "-3"], {}, "--cpu-ms must be ≥ 0"),
    (["--latency", "-5ms"], {}, "--latency must not be negative"),
    ([], {"ECHO_ERROR_RATE": "2"}, "ECHO_ERROR_RATE is a probability between 0 and 1"),
    ([], {"ECHO_NOT_READY": "maybe"}, "ECHO_NOT_READY must be true or false"),
    ([], {"POD_NAME": "bad\nname"}, "pod 'bad\\nname' must be printable ASCII"),
]


@pytest.mark.parametrize(("argv", "env", "message"), BAD, ids=[message.split()[0] for *_, message in BAD])
def test_bad_flags_are_one_line_and_exit_2(argv: list[str], env: dict[str, str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "workloads.echo", *argv],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("echo: ")
    assert message in lines[0]


def test_parse_errors_raise_config_error_in_process() -> None:
    with pytest.raises(ConfigError, match="ECHO_IDLE_TIMEOUT: invalid duration"):
        parse_args([], {"ECHO_IDLE_TIMEOUT": "5 minutes"})


def test_help_lists_every_flag_and_exits_0() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "workloads.echo", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    for flag in (
        "--port",
        "--admin-port",
        "--host",
        "--max-requests-per-connection",
        "--max-connection-age",
        "--max-connection-age-jitter",
        "--idle-timeout",
        "--latency",
        "--latency-jitter",
        "--error-rate",
        "--cpu-ms",
        "--not-ready",
        "--shutdown-timeout",
        "--log-requests",
    ):
        assert flag in result.stdout
