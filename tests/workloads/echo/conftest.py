"""Real echo servers on ephemeral loopback ports, stopped (SIGTERM, drain) after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from workloads.echo.process import EchoProcess


@pytest.fixture
def start_echo() -> Iterator[Callable[..., EchoProcess]]:
    """Start echo servers with extra flags/env; each is stopped (SIGTERM, drain) after the test."""
    started: list[EchoProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> EchoProcess:
        env = {"POD_NAME": "echo-test-0", "POD_IP": "10.244.0.7", "NODE_NAME": "node-a", **(env or {})}
        echo = EchoProcess(args, env=env).start()
        started.append(echo)
        return echo

    yield start
    for echo in started:
        echo.__exit__(None, None, None)


@pytest.fixture
def echo(start_echo: Callable[..., EchoProcess]) -> EchoProcess:
    """One echo server with every policy and fault off."""
    return start_echo()
