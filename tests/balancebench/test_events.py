"""Scenario events: every kind parses from YAML; a bad timeline is one line naming the event, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from balancebench.clusters.netns import runtime
from balancebench.errors import InvalidInput
from balancebench.events import EVENTS
from balancebench.scenario import load_scenario

BASE = """
name: t
cluster: {nodes: 2, targets: 6, sources: 2}
load: {duration: 10s, warmup: 1s}
policies: [okhttp, {policy: per-request, load: {duration: 8s}}]
"""


def scenario_with(tmp_path: Path, events: str) -> Path:
    path = tmp_path / "events.yaml"
    path.write_text(BASE + "events:\n" + events)
    return path


def test_every_kind_parses_and_plans(tmp_path: Path) -> None:
    path = scenario_with(
        tmp_path,
        """
  - {at: 1s, scale: 9}
  - {at: 2s, kill: echo-8}
  - {at: 2.5s, kill: random}
  - {at: 3s, slow: {pod: echo-0, latency: 50ms}}
  - {at: 3s, ready: {pod: echo-1, ready: false}}
  - {at: 4s, ready: {pod: echo-1, ready: true}}
  - {at: 5s, recover: echo-0}
  - {at: 6s, rolling-restart: {max_surge: 1, max_unavailable: 0, drain_timeout: 2s}}
""",
    )
    events = load_scenario(path).events
    assert [event.kind for event in events] == [
        "scale", "kill", "kill", "slow", "ready", "ready", "recover", "rolling-restart",
    ]  # fmt: skip
    assert set(EVENTS) == {event.kind for event in events}
    assert events[3].latency == pytest.approx(0.05)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("events", "says"),
    [
        ("  - {at: 9s, scale: 9}\n", "events[0] (scale to 9 at 9s): is outside the cell, which lasts 8s"),
        ("  - {at: 2s, kill: echo-6}\n", "events[0] (kill echo-6 at 2s): no pod 'echo-6' at that time"),
        ("  - {at: 2s, scale: 20000}\n", "20000 echo pods is more than this machine holds (at most 10000)"),
        ("  - {at: 2s, scale: 6}\n", "this scale changes nothing"),
        (
            "  - {at: 2s, kill: echo-1}\n  - {at: 2s, slow: {pod: echo-1, latency: 5ms}}\n",
            "events[1] (slow echo-1 by 5 ms at 2s): contradicts events[0] (kill echo-1) at the same time",
        ),
        ("  - {at: 2s, scale: 8}\n  - {at: 2s, rolling-restart: {}}\n", "contradicts events[0] (scale to 8)"),
        ("  - {at: 3s, kill: echo-2}\n  - {at: 4s, kill: echo-2}\n", "events[1] (kill echo-2 at 4s): no pod"),
        ("  - {at: 1s, rolling-restart: {}}\n  - {at: 5s, kill: echo-0}\n", "echo-6, echo-7"),
        ("  - {at: 2s, recover: echo-1}\n", "echo-1 is not slow at that time"),
        ("  - {at: 2s, ready: {pod: echo-1, ready: true}}\n", "echo-1 is ready at that time already"),
        ("  - {at: 2s, explode: echo-1}\n", "unknown event 'explode'"),
        ("  - {scale: 9}\n", "an event needs 'at'"),
        ("  - {at: 2s, scale: 9, kill: echo-1}\n", "2 event kinds in one entry"),
        ("  - {at: 2s, slow: {pod: echo-1}}\n", "slow: latency: Field required"),
        ("  - {at: 2s, slow: {pod: echo-1, latency: 5ms, colour: red}}\n", "unknown field: allowed are pod"),
        ("  - {at: 2s, rolling-restart: {max_surge: 0, max_unavailable: 0}}\n", "cannot both be 0"),
        ("  - {at: -1s, kill: echo-1}\n", "kill: at: the value must be zero or a positive duration"),
    ],
)
def test_bad_events_are_one_line_naming_the_event(tmp_path: Path, events: str, says: str) -> None:
    with pytest.raises(InvalidInput) as info:
        load_scenario(scenario_with(tmp_path, events))
    message = str(info.value)
    assert says in message
    assert "\n" not in message and info.value.exit_code == 2


def test_bad_event_on_the_command_line_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    path = scenario_with(tmp_path, "  - {at: 2s, kill: echo-42}\n")
    out = tmp_path / "run"
    before = runtime.running_names()
    done = subprocess.run(
        [sys.executable, "-m", "balancebench", "run", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "events[0] (kill echo-42 at 2s): no pod 'echo-42'" in lines[0]
    assert not out.exists()
    assert runtime.running_names() == before


def test_the_peak_of_pods_over_the_timeline_is_what_the_machine_must_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from balancebench import limits
    from balancebench.events import peak_targets
    from balancebench.runner import check_capacity

    path = scenario_with(
        tmp_path,
        "  - {at: 1s, scale: 40}\n  - {at: 2s, scale: 8}\n  - {at: 3s, rolling-restart: {max_surge: 1}}\n",
    )
    scenario = load_scenario(path)
    assert peak_targets(scenario.events, targets=6, max_targets=64) == (40, "events[0] (scale to 40 at 1s)")
    check_capacity(scenario, tmp_path / "run")  # 40 echo pods fit in this machine's memory
    # Room for the load generators and about 20 echo pods: the scale to 40 is refused, naming the event.
    small = limits.Machine(mem_available_mb=500, open_files=65536)
    monkeypatch.setattr(limits.Machine, "here", classmethod(lambda cls: small))
    with pytest.raises(InvalidInput) as info:
        check_capacity(scenario, tmp_path / "run")
    assert str(info.value).startswith("events[0] (scale to 40 at 1s): 40 echo pods")
    assert "at most" in str(info.value)
