"""Property-based fuzzing of the two parsers users feed directly: scenario files and compact pool policies.

Whatever the input — random bytes, random YAML documents, near-valid scenarios with hostile values, random
``--set`` overrides, random policy strings — the scenario loader either returns a Scenario whose numbers
are finite and in range, or raises InvalidInput with one line; the policy parser either returns a policy
that round-trips through its canonical string, or raises PolicyError with one line. Nothing else, ever.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from balancebench.errors import InvalidInput
from balancebench.scenario import MAX_DURATION, Scenario, load_scenario
from loadtests.policy import PRESETS, PolicyError, PoolPolicy, parse_policy

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=40,
)
durations = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.sampled_from(
        ["0", "250ms", "2s", "1.5m", "25h", "-1s", "1e9", "nan", "inf", "", "5 parsecs", "9" * 40]
    ),
)
policy_texts = st.one_of(
    st.sampled_from(list(PRESETS)),
    st.text(max_size=30),
    st.lists(
        st.sampled_from(
            ["idle=1s", "idle=2s", "max-idle=5", "max-conns=3", "max-age=30s±10%", "max-requests=100",
             "pick=lru", "scope=source", "keepalive", "per-request", "okhttp", "idle=nan", "max-idle=-1"]
        ),
        min_size=1,
        max_size=4,
    ).map(",".join),
)  # fmt: skip
near_valid = st.fixed_dictionaries(
    {
        "name": st.one_of(st.just("fuzz"), st.text(max_size=80)),
        "cluster": st.fixed_dictionaries(
            {},
            optional={
                "nodes": st.integers(-5, 2**40),
                "targets": st.integers(-5, 2**40),
                "sources": st.integers(-5, 2**40),
            },
        ),
        "dataplanes": st.one_of(
            st.just("all"),
            st.lists(st.sampled_from(["nftables", "iptables", "ipvs", "ebpf", "x"]), max_size=4),
        ),
        "load": st.fixed_dictionaries(
            {},
            optional={
                "model": st.sampled_from(["closed", "open", "both"]),
                "users_per_source": st.integers(-1, 2**40),
                "think_time": durations,
                "rate": st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
                "duration": durations,
                "warmup": durations,
            },
        ),
        "echo": st.fixed_dictionaries(
            {},
            optional={
                "latency": durations,
                "error_rate": st.floats(allow_nan=True, allow_infinity=True),
                "pods": st.dictionaries(
                    st.sampled_from(["echo-0", "echo-5", "echo-99", "web-1"]),
                    st.fixed_dictionaries({"latency": durations}),
                    max_size=2,
                ),
            },
        ),
        "policies": st.lists(
            st.one_of(
                policy_texts, st.fixed_dictionaries({"policy": policy_texts, "name": st.text(max_size=70)})
            ),
            max_size=3,
        ),
        "repetitions": st.integers(-1, 1000),
        "seed": st.one_of(st.none(), st.integers(-(2**70), 2**70)),
    }
)


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "fuzz.yaml"


def _load(path: Path, text: bytes, overrides: list[str] | None = None) -> Scenario | None:
    path.write_bytes(text)
    try:
        return load_scenario(path, overrides=overrides or [])
    except InvalidInput as exc:
        message = str(exc)
        assert message and "\n" not in message, repr(message)
        return None


def _assert_sane(scenario: Scenario) -> None:
    """An accepted scenario holds only finite, bounded numbers, and expands to distinct cells."""

    def walk(value: Any) -> None:
        if isinstance(value, float):
            assert math.isfinite(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(scenario.model_dump())
    assert len(scenario.name) <= 64
    cells = scenario.cells()
    assert len({cell.id for cell in cells}) == len(cells)
    for cell in cells:
        assert cell.load.duration_s is not None and 0 < cell.load.duration_s <= MAX_DURATION


@FUZZ
@given(st.binary(max_size=300))
@example(b"\xff\xfe\x00")
@example(b"[" * 100)
@example(b"&a [*a]")
def test_random_bytes_are_a_scenario_or_one_line(path: Path, raw: bytes) -> None:
    scenario = _load(path, raw)
    if scenario is not None:
        _assert_sane(scenario)


@FUZZ
@given(documents)
def test_random_yaml_documents_are_a_scenario_or_one_line(path: Path, document: object) -> None:
    scenario = _load(path, yaml.safe_dump(document, allow_unicode=True).encode())
    if scenario is not None:
        _assert_sane(scenario)


@FUZZ
@given(near_valid)
def test_near_valid_scenarios_with_hostile_values_are_checked_in_full(
    path: Path, document: dict[str, Any]
) -> None:
    scenario = _load(path, yaml.safe_dump(document, allow_unicode=True).encode())
    if scenario is not None:
        _assert_sane(scenario)
        targets = scenario.cluster.targets
        assert all(int(pod.removeprefix("echo-")) < targets for pod in scenario.echo.pods)
        assert len(set(scenario.dataplane_list())) == len(scenario.dataplane_list())


@FUZZ
@given(st.lists(st.text(max_size=40), max_size=4))
@example(["load.duration=[", "=", "a..b=1", "name.x=1"])
def test_random_overrides_are_a_scenario_or_one_line(path: Path, overrides: list[str]) -> None:
    scenario = _load(path, b"name: fuzz\npolicies: [keepalive]\n", overrides)
    if scenario is not None:
        _assert_sane(scenario)


@FUZZ
@given(policy_texts)
@example("idle=1s,idle=2s")
@example("okhttp,idle=1s")
def test_a_policy_string_parses_and_round_trips_or_is_one_line(text: str) -> None:
    try:
        policy = parse_policy(text)
    except PolicyError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(policy, PoolPolicy)
    assert parse_policy(policy.spec()) == policy
    keys = [item.partition("=")[0] for item in policy.spec().split(",")]
    assert len(keys) == len(set(keys))
    for value in (policy.idle_timeout, policy.max_age):
        assert value is None or (math.isfinite(value) and value > 0)


@FUZZ
@given(
    st.sampled_from(
        ["idle", "max-idle", "max-conns", "max-age", "max-requests", "pick", "scope", "keepalive"]
    ),
    st.lists(st.sampled_from(["1s", "5", "lru", "source", "on", "none", "2m"]), min_size=2, max_size=3),
)
def test_an_option_given_twice_is_refused(key: str, values: list[str]) -> None:
    text = ",".join(f"{key}={value}" for value in values)
    try:
        parse_policy(text)
    except PolicyError as exc:
        message = str(exc)
        assert "\n" not in message
        # Either a value is bad for the key, or (all values good) the duplicate is named.
        assert "twice" in message or key in message
    else:
        raise AssertionError(f"{text!r} was accepted: last-one-wins would measure something not written")
