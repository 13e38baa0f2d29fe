"""The one load value object: checked once on construction, written to run.json and to the locustfile's
options, and read back from them unchanged."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from analysis.manifest import LoadSpec
from loadtests.load import LOCUST_OPTIONS, Load, add_locust_arguments
from loadtests.policy import PolicyError


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"think_time_s": -1.0}, "think time must be zero or a positive duration"),
        ({"pause_s": 1.0}, "burst and pause go together"),
        ({"burst": 0, "pause_s": 1.0}, "burst must be a number of requests"),
        ({"model": "open", "rate": 0.0}, "rate must be a positive number"),
        ({"model": "open", "rate": 100.0, "think_time_s": 0.1}, "rate (open loop) excludes think time"),
        ({"model": "open"}, "model 'open' needs rate"),
        ({"rate": 5.0}, "rate is for model 'open'"),
        ({"duration_s": 0.0}, "duration must be positive"),
        ({"duration_s": 2.0, "warmup_s": 2.0}, "warmup (2s) must be shorter than duration (2s)"),
        ({"users_per_source": 0}, "users per source must be at least 1"),
        ({"driver": "curl"}, "unknown driver 'curl'"),
        ({"url_path": "echo"}, "must start with '/'"),
        ({"spawn_rate": 0.0}, "spawn rate must be positive"),
        ({"stop_after_requests": 0}, "stop-after-requests must be at least 1"),
    ],
)
def test_a_bad_load_is_one_line_naming_the_problem(kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(PolicyError) as info:
        Load(**kwargs)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        Load("closed")  # type: ignore[call-arg]
    load = Load()
    with pytest.raises(AttributeError):
        load.rate = 5.0  # type: ignore[misc]


LOADS = [
    Load(),
    Load(users_per_source=4, think_time_s=0.3, duration_s=2.5, warmup_s=0.5, url_path="/x"),
    Load(burst=5, pause_s=1.5, driver="httpx"),
    Load(model="open", rate=120.0, duration_s=3, warmup_s=0),
    Load(duration_s=None, warmup_s=0, stop_after_requests=20),
]


@pytest.mark.parametrize("load", LOADS)
def test_the_locustfile_options_give_back_the_same_load(load: Load) -> None:
    parser = argparse.ArgumentParser()
    add_locust_arguments(parser.add_argument)
    parsed = parser.parse_args(load.locust_options())
    rest = {"users_per_source": load.users_per_source, "spawn_rate": load.spawn_rate}
    assert Load.from_locust(parsed, **rest, stop_timeout_s=load.stop_timeout_s) == load


def test_every_locust_option_is_a_load_field() -> None:
    assert {option.field for option in LOCUST_OPTIONS} <= set(Load.__dataclass_fields__)


@pytest.mark.parametrize("load", LOADS)
def test_run_json_holds_the_load_as_is(load: Load) -> None:
    spec = LoadSpec.model_validate(load.manifest())
    for key, value in load.manifest().items():
        assert getattr(spec, key) == value
    assert spec.model_dump() == {**spec.model_dump(), **load.manifest()}
