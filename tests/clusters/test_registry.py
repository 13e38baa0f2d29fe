"""The provider table: every row loads a real provider, detection names what it tried, and every
`cluster` verb (and `run`) takes --provider."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import typer

from balancebench.cli import main
from balancebench.clusters import registry
from balancebench.clusters.base import Provider
from balancebench.clusters.netns import NetnsProvider
from balancebench.errors import InvalidInput, MissingFeature

PROTOCOL_VERBS = sorted(
    name for name, _ in inspect.getmembers(Provider, inspect.isfunction) if not name.startswith("_")
)


@pytest.mark.parametrize("entry", registry.PROVIDERS, ids=lambda entry: entry.name)
def test_every_row_is_a_provider_named_like_its_row(entry: registry.ProviderEntry) -> None:
    provider = registry.get(entry.name)
    assert provider.name == entry.name
    for verb in PROTOCOL_VERBS:
        assert callable(getattr(provider, verb, None)), f"{entry.name} lacks {verb}()"
    why_not = provider.unavailable()
    assert why_not is None or (why_not and "\n" not in why_not)


def test_names_are_unique() -> None:
    assert len(set(registry.names())) == len(registry.PROVIDERS)


def test_unknown_provider_names_the_known_ones() -> None:
    with pytest.raises(InvalidInput) as caught:
        registry.get("docker-desktop")
    for name in registry.names():
        assert name in str(caught.value)
    assert registry.AUTO in str(caught.value)


def test_detect_picks_netns_on_a_machine_that_has_its_tools() -> None:
    if NetnsProvider().unavailable() is not None:
        pytest.skip(f"netns cannot run here: {NetnsProvider().unavailable()}")
    assert registry.detect().name == "netns"
    assert registry.resolve(None).name == registry.resolve("auto").name == "netns"


def test_detect_names_every_provider_it_tried(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no unshare, no kind, no docker: nothing can run
    with pytest.raises(MissingFeature) as caught:
        registry.detect()
    message = str(caught.value)
    assert "\n" not in message
    for entry in registry.PROVIDERS:
        assert f"{entry.name}: " in message
    assert "the netns cluster needs 'unshare'" in message


def test_finding_an_unknown_cluster_names_the_providers_asked() -> None:
    if NetnsProvider().unavailable() is not None:
        pytest.skip(f"netns cannot run here: {NetnsProvider().unavailable()}")
    with pytest.raises(InvalidInput, match=r"no cluster named 'no-such-cluster' \(asked netns"):
        registry.find_cluster("no-such-cluster")


def _commands() -> dict[str, typer.models.CommandInfo]:
    from balancebench.commands import cluster, run, ui

    found = {f"cluster {c.name or c.callback.__name__}": c for c in cluster.app.registered_commands}  # type: ignore[union-attr]
    found["run"] = run.app.registered_commands[0]
    found["ui"] = ui.app.registered_commands[0]
    return found


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_cluster_verb_run_and_ui_take_provider(command: str) -> None:
    callback = _commands()[command].callback
    assert callback is not None
    assert "provider" in inspect.signature(callback).parameters


@pytest.mark.parametrize(
    "args",
    [
        ["cluster", "status", "dev", "--provider", "nope"],
        ["cluster", "up", "--name", "dev", "--provider", "nope"],
        ["cluster", "list", "--provider", "nope"],
        ["cluster", "down", "dev", "--provider", "nope"],
    ],
)
def test_an_unknown_provider_is_one_line_and_exit_2(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "unknown cluster provider 'nope'" in err


@pytest.mark.parametrize("command", ["run", "ui"])
def test_run_and_ui_reject_an_unknown_provider_before_anything_starts(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([command, "loadtests/scenarios/seed.yaml", "--provider", "nope", "--out", f"{tmp_path}/run"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown provider 'nope'" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()
