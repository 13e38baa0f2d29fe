"""The echo server's value objects: durations, fault knobs, connection policies, identity."""

from __future__ import annotations

import random
import socket

import pytest

from workloads.echo.config import ConfigError, ConnectionPolicy, EchoConfig, Faults, Identity, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("1s", 1.0), ("1.5s", 1.5), ("2m", 120.0), ("1h", 3600.0), ("3", 3.0), ("0.5", 0.5),
     (".5s", 0.5), (" 10ms ", 0.01), ("0", 0.0)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text, name="--x") == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [("-1s", "--x must not be negative"), ("1d", "invalid duration"), ("", "invalid duration"),
     ("ms", "invalid duration"), ("1e3", "invalid duration")],
)  # fmt: skip
def test_parse_duration_rejects(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_duration(text, name="--x")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"latency_ms": -1}, "latency_ms must not be negative"),
        ({"error_rate": 1.01}, "error_rate is a probability"),
        ({"cpu_ms": float("nan")}, "cpu_ms must be a finite number"),
        ({"latency_jitter_ms": True}, "latency_jitter_ms must be a finite number"),
    ],
)
def test_faults_validate_on_construction(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Faults(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("faults", "active"),
    [
        (Faults(), False),
        (Faults(latency_ms=1), True),
        (Faults(error_rate=0.1), True),
        (Faults(cpu_ms=1), True),
    ],
)
def test_faults_active_flag(faults: Faults, active: bool) -> None:
    assert faults.active is active


def test_faults_updated_keeps_what_was_not_sent() -> None:
    faults = Faults(latency_ms=50, cpu_ms=1).updated({"error_rate": 0.5})
    assert faults == Faults(latency_ms=50, error_rate=0.5, cpu_ms=1)
    with pytest.raises(ConfigError, match="unknown fault bogus"):
        faults.updated({"bogus": 1})


@pytest.mark.parametrize(("latency", "jitter"), [(100.0, 0.0), (100.0, 30.0), (10.0, 50.0)])
def test_fault_delay_stays_within_its_jitter_and_never_below_zero(latency: float, jitter: float) -> None:
    faults = Faults(latency_ms=latency, latency_jitter_ms=jitter)
    rng = random.Random(7)
    delays = [faults.delay_s(rng) * 1000 for _ in range(2000)]
    assert min(delays) >= max(latency - jitter, 0) - 1e-9
    assert max(delays) <= latency + jitter + 1e-9
    if jitter:
        assert len(set(delays)) > 1000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_requests_per_connection": 0}, "max_requests_per_connection must be a whole number ≥ 1"),
        ({"max_requests_per_connection": 2.5}, "max_requests_per_connection must be a whole number ≥ 1"),
        ({"max_connection_age_s": -1.0}, "max_connection_age_s must be > 0"),
        ({"idle_timeout_s": 0.0}, "idle_timeout_s must be > 0"),
        ({"max_connection_age_jitter": 1.0}, "max_connection_age_jitter is a fraction"),
    ],
)
def test_connection_policy_validates(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ConnectionPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("jitter", "low", "high"), [(0.0, 10.0, 10.0), (0.1, 9.0, 11.0)])
def test_age_limit_is_drawn_within_the_jitter(jitter: float, low: float, high: float) -> None:
    policy = ConnectionPolicy(max_connection_age_s=10.0, max_connection_age_jitter=jitter)
    rng = random.Random(3)
    limits = [policy.age_limit_s(rng) for _ in range(500)]
    assert all(limit is not None and low <= limit <= high for limit in limits)
    assert ConnectionPolicy().age_limit_s(rng) is None


@pytest.mark.parametrize(
    ("env", "host", "expected"),
    [
        (
            {"POD_NAME": "echo-1", "POD_IP": "10.0.0.9", "NODE_NAME": "n1"},
            "0.0.0.0",
            Identity(pod="echo-1", pod_ip="10.0.0.9", node="n1"),
        ),
        ({}, "0.0.0.0", Identity(pod=socket.gethostname(), pod_ip=None, node=socket.gethostname())),
        ({}, "10.1.2.3", Identity(pod=socket.gethostname(), pod_ip="10.1.2.3", node=socket.gethostname())),
    ],
    ids=["downward-api", "wildcard-listen", "specific-listen"],
)
def test_identity_from_env(env: dict[str, str], host: str, expected: Identity) -> None:
    assert Identity.from_env(env, host=host) == expected


def test_echo_config_rejects_equal_ports() -> None:
    with pytest.raises(ConfigError, match="must differ"):
        EchoConfig(port=9000, admin_port=9000)
    assert EchoConfig(port=0, admin_port=0).port == 0  # two ephemeral ports are fine
