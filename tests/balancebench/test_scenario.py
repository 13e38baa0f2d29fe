"""Scenario files: validation errors name the file, the field and the fix; the matrix expands to cells."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from balancebench.durations import parse_duration
from balancebench.errors import InvalidInput
from balancebench.scenario import load_scenario

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "loadtests" / "scenarios"

MINIMAL = """
name: t
policies: [okhttp, per-request]
"""


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("1.5s", 1.5), ("2m", 120.0), ("1h", 3600.0), ("3", 3.0), (2, 2.0), (0.5, 0.5)],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["-1s", "fast", "1 parsec", True])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_scenarios_are_valid(path: Path) -> None:
    scenario = load_scenario(path)
    cells = scenario.cells()
    assert cells
    assert len({cell.id for cell in cells}) == len(cells)


def test_seed_expands_to_the_seed_matrix() -> None:
    scenario = load_scenario(SCENARIOS / "seed.yaml")
    ids = [cell.id for cell in scenario.cells()]
    assert ids[:2] == ["ipvs/okhttp", "ipvs/okhttp-1s"]  # the incident's dataplane first, then nftables
    assert "nftables/per-request" in ids and len(ids) == 2 * 6
    gaps = next(c for c in scenario.cells() if c.id == "nftables/okhttp-1s-idle-gaps")
    assert gaps.policy == "okhttp-1s,scope=user"
    assert gaps.load.think_time_s == pytest.approx(1.5)
    assert gaps.load.users_per_source == 20
    assert gaps.load.duration_s == scenario.load.duration


def test_matrix_is_dataplanes_x_repetitions_x_policies(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(MINIMAL + "dataplanes: [nftables, iptables]\nrepetitions: 2\n")
    cells = load_scenario(path).cells()
    assert len(cells) == 2 * 2 * 2
    assert cells[0].id == "nftables/okhttp#1"
    assert {c.dataplane for c in cells} == {"nftables", "iptables"}


def test_overrides_apply_before_validation(tmp_path: Path) -> None:
    path = tmp_path / "o.yaml"
    path.write_text(MINIMAL)
    scenario = load_scenario(path, overrides=["load.duration=5s", "dataplanes=[ebpf]", "cluster.targets=3"])
    assert scenario.load.duration == 5.0
    assert scenario.dataplanes == ["ebpf"]
    assert scenario.cluster.targets == 3


@pytest.mark.parametrize(
    ("extra", "field", "hint"),
    [
        ("colour: blue\n", "colour", "unknown field: allowed are name, description, cluster"),
        ("cluster: {nodez: 2}\n", "cluster.nodez", "allowed are provider, nodes, targets, sources"),
        ("echo: {pods: {echo-0: {latncy: 5ms}}}\n", "echo.pods.echo-0.latncy", "allowed are latency,"),
        ("policies: [{policy: okhttp, load: {thinktime: 1s}}]\n", "policies.0.load", "'thinktime'"),
        ("policies: [okhttp, bogus-client]\n", "policies.1.policy", "presets are keepalive"),
        ("cluster: {targets: 0}\n", "cluster.targets", "greater than or equal to 1"),
        ("load: {duration: -5s}\n", "load.duration", "zero or a positive duration"),
        ("load: {duration: 2s, warmup: 3s}\n", "load", "shorter than duration"),
        ("dataplanes: [bogus]\n", "dataplanes", "unknown dataplane 'bogus': choose from nftables, iptables"),
        ("dataplanes: everything\n", "dataplanes", "unknown dataplane 'everything'"),
        ("load: {model: open}\n", "load", "needs rate"),
        ("policies: [{policy: max-age=30s, load: {driver: requests}}]\n", "", "cannot enforce max-age"),
        ("echo: {pods: {web-1: {latency: 5ms}}}\n", "echo.pods", "echo-0"),
    ],
)
def test_invalid_scenarios_name_file_field_and_fix(tmp_path: Path, extra: str, field: str, hint: str) -> None:
    path = tmp_path / "bad.yaml"
    # A key given twice is an error of its own, so an extra "policies:" replaces the minimal one.
    base = "name: t\n" if extra.startswith("policies:") else MINIMAL
    path.write_text(base + extra)
    with pytest.raises(InvalidInput) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {field}")
    assert hint in message
    assert "\n" not in message


def test_unknown_policy_is_named(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: t\npolicies: [okhttp, bogus-client]\n")
    with pytest.raises(InvalidInput, match=r"policies.*bogus-client"):
        load_scenario(path)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such scenario file"):
        load_scenario(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(InvalidInput, match="not valid YAML"):
        load_scenario(bad)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("colour: blue\n", "colour"),
        ("policies: [okhttp, bogus-client]\n", "policies.1.policy"),
        ("load: {duration: -5s}\n", "load.duration"),
        ("cluster: {targets: 0}\n", "cluster.targets"),
    ],
)
def test_cli_rejects_invalid_scenario_with_one_line_and_exit_2(
    tmp_path: Path, extra: str, field: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(("name: t\n" if extra.startswith("policies:") else MINIMAL) + extra)
    done = subprocess.run(
        [sys.executable, "-m", "balancebench", "run", str(path), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"balancebench: {path}: {field}: ")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_all_dataplanes_resolve_to_what_this_machine_has(tmp_path: Path) -> None:
    from balancebench.clusters.netns.provider import check_machine
    from balancebench.errors import MissingFeature
    from balancebench.runner import plan

    def runs_here(dataplane: str) -> bool:
        try:
            check_machine(dataplane)  # on host or, where the host lacks a feature, UML node kernels
        except MissingFeature:
            return False
        return True

    path = tmp_path / "all.yaml"
    path.write_text(MINIMAL + "dataplanes: all\n")
    scenario, skipped = plan(load_scenario(path))
    assert scenario.dataplanes == [d for d in ("nftables", "iptables", "ipvs", "ebpf") if runs_here(d)]
    assert set(skipped) == {d for d in ("nftables", "iptables", "ipvs", "ebpf") if not runs_here(d)}
    assert all(reason.startswith("dataplane ") for reason in skipped.values())


def test_an_explicit_dataplane_missing_here_fails_before_anything_is_made(tmp_path: Path) -> None:
    from balancebench.clusters.netns.dataplanes import ipvs

    try:
        ipvs.check()
    except Exception:
        pass
    else:
        pytest.skip("this kernel has IPVS, so every dataplane can run here")
    path = tmp_path / "ipvs.yaml"
    path.write_text(MINIMAL + "cluster: {node_kernel: host}\ndataplanes: [nftables, ipvs]\n")
    done = subprocess.run(
        [sys.executable, "-m", "balancebench", "run", str(path), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "IPVS" in done.stderr and "nftables" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
