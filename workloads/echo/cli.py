"""Command line of the echo server: flags, each also read from ``ECHO_<FLAG_IN_UPPER_SNAKE>`` (the flag wins).

A bad flag or env var is one line on stderr and exit code 2; the server itself is imported only after the
flags are good, so a typo fails fast.

    $ python -m workloads.echo --port 8080 --max-connection-age 30s --max-connection-age-jitter 0.1
    $ ECHO_LATENCY=50ms python -m workloads.echo --port 0 --admin-port 0
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from workloads.echo.config import ConfigError, ConnectionPolicy, EchoConfig, Faults, TlsFiles, parse_duration

PROG = "python -m workloads.echo"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse would print the whole usage block; the contract is one line
        raise ConfigError(f"{message} (see '{PROG} --help')")


# -- converters: (text, where it came from) → value, or ConfigError naming the flag or env var -----------


def _text(text: str, source: str) -> str:
    return text


def _integer(text: str, source: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{source} must be a whole number, got {text!r}") from None


def _number(text: str, source: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{source} must be a number, got {text!r}") from None


def _duration(text: str, source: str) -> float:
    return parse_duration(text, name=source)


def _positive_duration(text: str, source: str) -> float:
    seconds = _duration(text, source)
    if seconds <= 0:
        raise ConfigError(f"{source} must be > 0")
    return seconds


def _optional_duration(text: str, source: str) -> float | None:
    if text.strip().lower() == "off":
        return None
    seconds = parse_duration(text, name=source)
    if seconds <= 0:
        raise ConfigError(f"{source} must be > 0, got {text!r} (leave it unset or say 'off' to turn it off)")
    return seconds


def _optional_count(text: str, source: str) -> int | None:
    if text.strip().lower() == "off":
        return None
    count = _integer(text, source)
    if count < 1:
        raise ConfigError(f"{source} must be ≥ 1, got {text!r} (leave it unset or say 'off' to turn it off)")
    return count


def _flag(text: str, source: str) -> bool:
    if text.strip().lower() in _TRUE:
        return True
    if text.strip().lower() in _FALSE:
        return False
    raise ConfigError(f"{source} must be true or false, got {text!r}")


def _port(text: str, source: str) -> int:
    number = _integer(text, source)
    if not 0 <= number <= 65535:
        raise ConfigError(f"{source} must be between 0 and 65535 (0 = any free port), got {text!r}")
    return number


def _fraction(text: str, source: str) -> float:
    jitter = _number(text, source)
    if not 0 <= jitter < 1:
        raise ConfigError(f"{source} is a fraction in [0, 1) (0.1 = ±10 %), got {text!r}")
    return jitter


def _probability(text: str, source: str) -> float:
    rate = _number(text, source)
    if not 0 <= rate <= 1:
        raise ConfigError(f"{source} is a probability between 0 and 1, got {text!r}")
    return rate


def _milliseconds(text: str, source: str) -> float:
    ms = _number(text, source)
    if not ms >= 0:  # also rejects nan
        raise ConfigError(f"{source} must be ≥ 0 milliseconds, got {text!r}")
    return ms


@dataclass(frozen=True)
class Option:
    """One flag of the echo server (also ``ECHO_<DEST>``): how it reads and what it means unset."""

    flag: str
    metavar: str | None
    help: str
    convert: Callable[[str, str], Any]
    default: Any = None

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("--port", "PORT", "echo port, every path is the echo (default 8080; 0 = any free port)",
           _port, 8080),
    Option("--admin-port", "PORT", "probes, /metrics and /admin/* (default 8081; 0 = any free port)",
           _port, 8081),
    Option("--host", "ADDR", "address to listen on (default 0.0.0.0)", _text, "0.0.0.0"),
    Option("--max-requests-per-connection", "N", "close a connection after its Nth response (default off)",
           _optional_count),
    Option("--max-connection-age", "DURATION", "close a connection on its first response at this age",
           _optional_duration),
    Option("--max-connection-age-jitter", "FRACTION", "± jitter of the age, 0.1 = ±10 %% (default 0)",
           _fraction, 0.0),
    Option("--max-connection-age-grace", "DURATION",
           "HTTP/2, gRPC: after the max-age GOAWAY, cut the connection after this long (default: wait)",
           _optional_duration),
    Option("--max-concurrent-streams", "N",
           "HTTP/2, gRPC: SETTINGS_MAX_CONCURRENT_STREAMS advertised to clients (default unlimited)",
           _optional_count),
    Option("--tls-cert", "FILE", "PEM certificate: the echo port then also speaks TLS (ALPN h2)", _text),
    Option("--tls-key", "FILE", "PEM private key of --tls-cert", _text),
    Option("--idle-timeout", "DURATION", "close kept-alive connections idle this long (default off)",
           _optional_duration),
    Option("--latency", "DURATION", "added latency per request (default 0)", _duration, 0.0),
    Option("--latency-jitter", "DURATION", "± uniform jitter of the added latency (default 0)",
           _duration, 0.0),
    Option("--error-rate", "P", "probability of answering 503 (default 0)", _probability, 0.0),
    Option("--cpu-ms", "MS", "busy CPU milliseconds burnt per request (default 0)", _milliseconds, 0.0),
    Option("--not-ready", None, "start with /readyz answering 503", _flag, False),
    Option("--shutdown-timeout", "DURATION", "bound on the SIGTERM drain (default 10s)", _positive_duration,
           10.0),
    Option("--log-requests", None, "log every request to stderr (default off)", _flag, False),
)  # fmt: skip
"""Every flag, in ``--help`` order; a switch (no metavar) takes no value on the command line."""


@functools.cache
def _parser() -> argparse.ArgumentParser:
    # one parser for every parse (argparse does not mutate it): an echo host parses each pod's flags
    parser = _Parser(
        prog=PROG,
        description="HTTP/1.1, HTTP/2 and gRPC echo target: every response says which pod, connection "
        "and stream answered.",
        epilog="Every flag can also be set as ECHO_<FLAG> (e.g. ECHO_MAX_CONNECTION_AGE=30s); the flag wins. "
        "Durations: 250ms, 1s, 1.5s, 2m or bare seconds.",
        allow_abbrev=False,
    )
    for option in OPTIONS:
        if option.metavar is None:
            parser.add_argument(option.flag, action="store_const", const=True, help=option.help)
        else:
            parser.add_argument(option.flag, metavar=option.metavar, help=option.help)
    return parser


def _attach_negative_values(argv: Sequence[str]) -> list[str]:
    """``--latency -5ms`` → ``--latency=-5ms``: argparse takes ``-5ms`` for a flag, hiding the error."""
    attached: list[str] = []
    skip = False
    for token, following in zip(argv, [*argv[1:], None], strict=False):
        if skip:
            skip = False
        elif token.startswith("--") and "=" not in token and following and re.match(r"^-[\d.]", following):
            attached.append(f"{token}={following}")
            skip = True
        else:
            attached.append(token)
    return attached


def _env_name(dest: str) -> str:
    return "ECHO_" + dest.upper()


def parse_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> EchoConfig:
    """An ``EchoConfig`` from flags and ``ECHO_*`` env vars; raises ``ConfigError`` with one clear line.

    >>> parse_args(["--max-connection-age", "1s"], env={}).policy.max_connection_age_s
    1.0
    """
    env = os.environ if env is None else env
    given = vars(_parser().parse_args(_attach_negative_values(sys.argv[1:] if argv is None else argv)))
    values: dict[str, Any] = {}
    sources: dict[str, str | None] = {}
    for option in OPTIONS:
        text, source = given[option.dest], option.flag
        if text is None and _env_name(option.dest) in env:
            text, source = env[_env_name(option.dest)], _env_name(option.dest)
        values[option.dest] = option.default if text is None else option.convert(str(text), source)
        sources[option.dest] = source if text is not None else None
    cert, key = values["tls_cert"], values["tls_key"]
    if (cert is None) != (key is None):
        missing = sources["tls_cert"] or "--tls-cert" if cert is None else sources["tls_key"] or "--tls-key"
        raise ConfigError(f"TLS needs both --tls-cert and --tls-key: {missing} is missing")
    return EchoConfig(
        host=values["host"],
        port=values["port"],
        admin_port=values["admin_port"],
        policy=ConnectionPolicy(
            max_requests_per_connection=values["max_requests_per_connection"],
            max_connection_age_s=values["max_connection_age"],
            max_connection_age_jitter=values["max_connection_age_jitter"],
            max_connection_age_grace_s=values["max_connection_age_grace"],
            idle_timeout_s=values["idle_timeout"],
            max_concurrent_streams=values["max_concurrent_streams"],
        ),
        faults=Faults(
            latency_ms=values["latency"] * 1000,
            latency_jitter_ms=values["latency_jitter"] * 1000,
            error_rate=values["error_rate"],
            cpu_ms=values["cpu_ms"],
        ),
        ready=not values["not_ready"],
        shutdown_timeout_s=values["shutdown_timeout"],
        log_requests=values["log_requests"],
        tls=TlsFiles(cert=cert, key=key) if cert is not None and key is not None else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the echo server until SIGTERM; 2 for bad flags, 1 when a port cannot be bound, else 0."""
    try:
        config = parse_args(argv)
    except ConfigError as exc:
        print(f"echo: {exc}", file=sys.stderr)
        return 2
    if config.log_requests:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")

    from workloads.echo.server import EchoServer  # only now: a bad flag should not pay for aiohttp's import

    try:
        server = EchoServer(config)
    except ConfigError as exc:
        print(f"echo: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(server.serve_until_signal())
    except OSError as exc:
        print(
            f"echo: cannot listen on {config.host} ports {config.port}/{config.admin_port}: {exc}",
            file=sys.stderr,
        )
        return 1
    return 0
