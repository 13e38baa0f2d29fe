"""Command line of the echo server: flags, each also read from ``ECHO_<FLAG_IN_UPPER_SNAKE>`` (the flag wins).

A bad flag or env var is one line on stderr and exit code 2; the server itself is imported only after the
flags are good, so a typo fails fast.

    $ python -m workloads.echo --port 8080 --max-connection-age 30s --max-connection-age-jitter 0.1
    $ ECHO_LATENCY=50ms python -m workloads.echo --port 0 --admin-port 0
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn, TypeVar

from workloads.echo.config import ConfigError, ConnectionPolicy, EchoConfig, Faults, TlsFiles, parse_duration

PROG = "python -m workloads.echo"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_T = TypeVar("_T")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse would print the whole usage block; the contract is one line
        raise ConfigError(f"{message} (see '{PROG} --help')")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="HTTP/1.1, HTTP/2 and gRPC echo target: every response says which pod, connection "
        "and stream answered.",
        epilog="Every flag can also be set as ECHO_<FLAG> (e.g. ECHO_MAX_CONNECTION_AGE=30s); the flag wins. "
        "Durations: 250ms, 1s, 1.5s, 2m or bare seconds.",
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("--port", metavar="PORT", help="echo port, every path is the echo (default 8080; 0 = any free port)")
    add(
        "--admin-port", metavar="PORT", help="probes, /metrics and /admin/* (default 8081; 0 = any free port)"
    )
    add("--host", metavar="ADDR", help="address to listen on (default 0.0.0.0)")
    add(
        "--max-requests-per-connection",
        metavar="N",
        help="close a connection after its Nth response (default off)",
    )
    add(
        "--max-connection-age",
        metavar="DURATION",
        help="close a connection on its first response at this age",
    )
    add(
        "--max-connection-age-jitter",
        metavar="FRACTION",
        help="± jitter of the age, 0.1 = ±10 %% (default 0)",
    )
    add(
        "--max-connection-age-grace",
        metavar="DURATION",
        help="HTTP/2, gRPC: after the max-age GOAWAY, cut the connection after this long (default: wait)",
    )
    add(
        "--max-concurrent-streams",
        metavar="N",
        help="HTTP/2, gRPC: SETTINGS_MAX_CONCURRENT_STREAMS advertised to clients (default unlimited)",
    )
    add("--tls-cert", metavar="FILE", help="PEM certificate: the echo port then also speaks TLS (ALPN h2)")
    add("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    add(
        "--idle-timeout", metavar="DURATION", help="close kept-alive connections idle this long (default off)"
    )
    add("--latency", metavar="DURATION", help="added latency per request (default 0)")
    add("--latency-jitter", metavar="DURATION", help="± uniform jitter of the added latency (default 0)")
    add("--error-rate", metavar="P", help="probability of answering 503 (default 0)")
    add("--cpu-ms", metavar="MS", help="busy CPU milliseconds burnt per request (default 0)")
    add("--not-ready", action="store_const", const=True, help="start with /readyz answering 503")
    add("--shutdown-timeout", metavar="DURATION", help="bound on the SIGTERM drain (default 10s)")
    add("--log-requests", action="store_const", const=True, help="log every request to stderr (default off)")
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

    def raw(dest: str) -> tuple[str | None, str]:
        """The value as text and where it came from, for the error message."""
        flag = "--" + dest.replace("_", "-")
        if given[dest] is not None:
            return str(given[dest]), flag
        if _env_name(dest) in env:
            return env[_env_name(dest)], _env_name(dest)
        return None, flag

    def value(dest: str, convert: Callable[[str, str], _T], default: _T) -> _T:
        text, source = raw(dest)
        return default if text is None else convert(text, source)

    def integer(text: str, source: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{source} must be a whole number, got {text!r}") from None

    def number(text: str, source: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{source} must be a number, got {text!r}") from None

    def duration(text: str, source: str) -> float:
        return parse_duration(text, name=source)

    def optional_duration(text: str, source: str) -> float | None:
        if text.strip().lower() == "off":
            return None
        seconds = parse_duration(text, name=source)
        if seconds <= 0:
            raise ConfigError(
                f"{source} must be > 0, got {text!r} (leave it unset or say 'off' to turn it off)"
            )
        return seconds

    def optional_count(text: str, source: str) -> int | None:
        if text.strip().lower() == "off":
            return None
        count = integer(text, source)
        if count < 1:
            raise ConfigError(
                f"{source} must be ≥ 1, got {text!r} (leave it unset or say 'off' to turn it off)"
            )
        return count

    def flag(text: str, source: str) -> bool:
        if text.strip().lower() in _TRUE:
            return True
        if text.strip().lower() in _FALSE:
            return False
        raise ConfigError(f"{source} must be true or false, got {text!r}")

    def port(text: str, source: str) -> int:
        number_ = integer(text, source)
        if not 0 <= number_ <= 65535:
            raise ConfigError(f"{source} must be between 0 and 65535 (0 = any free port), got {text!r}")
        return number_

    def fraction(text: str, source: str) -> float:
        jitter = number(text, source)
        if not 0 <= jitter < 1:
            raise ConfigError(f"{source} is a fraction in [0, 1) (0.1 = ±10 %), got {text!r}")
        return jitter

    def probability(text: str, source: str) -> float:
        rate = number(text, source)
        if not 0 <= rate <= 1:
            raise ConfigError(f"{source} is a probability between 0 and 1, got {text!r}")
        return rate

    def milliseconds(text: str, source: str) -> float:
        ms = number(text, source)
        if not ms >= 0:  # also rejects nan
            raise ConfigError(f"{source} must be ≥ 0 milliseconds, got {text!r}")
        return ms

    policy = ConnectionPolicy(
        max_requests_per_connection=value("max_requests_per_connection", optional_count, None),
        max_connection_age_s=value("max_connection_age", optional_duration, None),
        max_connection_age_jitter=value("max_connection_age_jitter", fraction, 0.0),
        max_connection_age_grace_s=value("max_connection_age_grace", optional_duration, None),
        idle_timeout_s=value("idle_timeout", optional_duration, None),
        max_concurrent_streams=value("max_concurrent_streams", optional_count, None),
    )
    cert, cert_source = raw("tls_cert")
    key, key_source = raw("tls_key")
    if (cert is None) != (key is None):
        missing = key_source if key is None else cert_source
        raise ConfigError(f"TLS needs both --tls-cert and --tls-key: {missing} is missing")
    tls = TlsFiles(cert=cert, key=key) if cert is not None and key is not None else None
    faults = Faults(
        latency_ms=value("latency", duration, 0.0) * 1000,
        latency_jitter_ms=value("latency_jitter", duration, 0.0) * 1000,
        error_rate=value("error_rate", probability, 0.0),
        cpu_ms=value("cpu_ms", milliseconds, 0.0),
    )
    shutdown_timeout = value("shutdown_timeout", duration, 10.0)
    if shutdown_timeout <= 0:
        raise ConfigError(f"{raw('shutdown_timeout')[1]} must be > 0")
    return EchoConfig(
        host=value("host", lambda text, _source: text, "0.0.0.0"),
        port=value("port", port, 8080),
        admin_port=value("admin_port", port, 8081),
        policy=policy,
        faults=faults,
        ready=not value("not_ready", flag, False),
        shutdown_timeout_s=shutdown_timeout,
        log_requests=value("log_requests", flag, False),
        tls=tls,
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
