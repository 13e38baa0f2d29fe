"""The compact policy form, presets and validation: every message is one clear line."""

from __future__ import annotations

import pytest

from loadtests.policy import (
    OKHTTP,
    OKHTTP_1S,
    PRESETS,
    PolicyError,
    PoolPolicy,
    format_duration,
    parse_duration,
    parse_policy,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("keepalive", PoolPolicy()),
        ("per-request", PoolPolicy(keepalive=False)),
        ("keepalive=off", PoolPolicy(keepalive=False)),
        ("idle=1s", PoolPolicy(idle_timeout=1.0)),
        ("idle=250ms", PoolPolicy(idle_timeout=0.25)),
        ("idle-timeout=5m", PoolPolicy(idle_timeout=300.0)),
        ("max-age=30s±10%", PoolPolicy(max_age=30.0, max_age_jitter=0.1)),
        ("max-age=30s+-10%", PoolPolicy(max_age=30.0, max_age_jitter=0.1)),
        ("max-age=1.5s", PoolPolicy(max_age=1.5)),
        ("max-requests=100", PoolPolicy(max_requests=100)),
        ("max-requests=100±5%", PoolPolicy(max_requests=100, max_requests_jitter=0.05)),
        ("max-idle=5,idle=1s,pick=lru", PoolPolicy(max_idle=5, idle_timeout=1.0, pick="lru")),
        ("max-conns=4,scope=source", PoolPolicy(max_connections=4, scope="source")),
        ("max-connections=none", PoolPolicy()),
        ("pick=random", PoolPolicy(pick="random")),
        ("max-idle=2,surplus=returned", PoolPolicy(max_idle=2, surplus="returned")),
        ("surplus=longest-idle", PoolPolicy()),
        ("okhttp", OKHTTP),
        ("okhttp-1s", OKHTTP_1S),
        ("okhttp,idle=1s", OKHTTP_1S),
        ("okhttp,scope=user", PoolPolicy(max_idle=5, idle_timeout=300.0, pick="oldest")),
        (" max-idle = 2 , idle = 90s ", PoolPolicy(max_idle=2, idle_timeout=90.0)),
    ],
)
def test_parse_policy(text: str, expected: PoolPolicy) -> None:
    assert parse_policy(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty pool policy"),
        ("okhtp", "unknown pool policy 'okhtp'"),
        ("idle=0s", "idle must be a positive duration"),
        ("idle=-1s", "idle must be a positive duration"),
        ("idle=fast", "idle must be a duration like 250ms"),
        ("max-age=0ms", "max-age must be a positive duration"),
        ("max-age=30s±120%", "jitter must be between 0% and 99%"),
        ("max-age=30s±ten%", "jitter must be a percentage"),
        ("max-requests=0", "max-requests must be a whole number of at least 1"),
        ("max-requests=lots", "max-requests must be a whole number"),
        ("max-idle=-1", "max-idle must be a whole number of at least 0"),
        ("max-conns=0", "max-conns must be a whole number of at least 1"),
        ("pick=fifo", "unknown pick 'fifo': choose one of mru, lru, oldest, random"),
        ("scope=node", "unknown scope 'node': choose one of user, source"),
        ("surplus=newest", "unknown surplus 'newest': choose one of longest-idle, returned"),
        ("colour=blue", "unknown option 'colour'"),
        ("idle=1s,okhttp", "preset 'okhttp' must come first"),
        ("idle=1s,,pick=lru", "empty item"),
        ("keepalive=maybe", "keepalive must be on or off"),
    ],
)
def test_bad_policy_is_one_clear_line(text: str, says: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    message = str(info.value)
    assert says in message
    assert "\n" not in message


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_their_compact_form(name: str) -> None:
    policy = PRESETS[name]
    assert parse_policy(policy.spec()) == policy
    assert parse_policy(name) == policy


@pytest.mark.parametrize(
    "policy",
    [
        PoolPolicy(max_age=30.0, max_age_jitter=0.1, max_requests=100, max_requests_jitter=0.25),
        PoolPolicy(keepalive=False, pick="random", scope="source"),
        PoolPolicy(idle_timeout=0.2, max_idle=0, max_connections=3),
        PoolPolicy(max_idle=2, surplus="returned", pick="lru"),
    ],
)
def test_spec_round_trips(policy: PoolPolicy) -> None:
    assert parse_policy(str(policy)) == policy


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"max_idle": -1}, "max-idle"),
        ({"idle_timeout": 0.0}, "idle must be a positive duration"),
        ({"max_age": -5.0}, "max-age must be a positive duration"),
        ({"max_age_jitter": 0.1}, "needs a max-age"),
        ({"max_requests_jitter": 0.1}, "needs a max-requests"),
        ({"pick": "fifo"}, "unknown pick"),
        ({"surplus": "newest"}, "unknown surplus"),
    ],
)
def test_policy_validates_on_construction(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(PolicyError, match=says):
        PoolPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("1s", 1.0), ("1.5s", 1.5), ("5m", 300.0), ("2h", 7200.0), ("3", 3.0), (".5s", 0.5)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250ms"), (1.0, "1s"), (90.0, "90s"), (300.0, "5m"), (7200.0, "2h"), (1.5, "1500ms")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds
