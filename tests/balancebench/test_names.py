"""A cluster name is never a path: every verb refuses path-like names and touches nothing outside its dirs.

``cluster down NAME`` used to unlink ``RUNTIME_DIR/NAME.log`` unchecked, so ``down ../x`` removed ``x.log``
one level up, as root. Here sentinel files wait at every place such a name would reach; each verb must
refuse the name in one line (exit 2) and every sentinel must survive, byte for byte.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from balancebench.cli import main
from balancebench.clusters.netns import NetnsProvider, runtime
from balancebench.errors import InvalidInput
from balancebench.names import check_cluster_name, own_path

VERBS: list[list[str]] = [
    ["down", "{name}"],
    ["status", "{name}"],
    ["status", "{name}", "--json"],
    ["exec", "{name}", "echo-0", "--", "true"],
    ["kill", "{name}", "echo-0"],
    ["scale", "{name}", "--targets", "1"],
    ["set-ready", "{name}", "echo-0", "--not-ready"],
    ["up", "--name", "{name}"],
]


def _path_like_names(base: Path) -> list[str]:
    return [
        "../victim",
        "../../victim",
        "a/../../victim",
        "sub/../victim",
        str(base / "absolute"),
        "/etc/passwd",
        "..",
        ".",
        "",
        "a" * 300,
        "a" * 33,
        "a\0b",
        "dev\n",
        "Dev",
        "-dev",
        "dev-",
        "d e v",
        "dév",
    ]


@pytest.fixture
def sandboxed_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runtime directory one level below tmp_path, so that ``../victim`` lands on a sentinel."""
    runtime_dir = tmp_path / "outer" / "runtime"
    (runtime_dir / "a").mkdir(parents=True)  # so "a/../../victim" resolves in the kernel too
    (runtime_dir / "sub").mkdir()
    monkeypatch.setenv(runtime.RUNTIME_DIR_ENV, str(runtime_dir))
    return runtime_dir


def _plant_sentinels(runtime_dir: Path, names: list[str]) -> dict[Path, bytes]:
    """A file at every place ``RUNTIME_DIR/<name>.{log,lock,sock}`` would reach outside the runtime dir."""
    planted: dict[Path, bytes] = {}
    top = runtime_dir.parent.parent
    for name in names:
        if "\0" in name:
            continue
        for suffix in (".log", ".lock", ".sock"):
            target = Path(os.path.normpath(runtime_dir / f"{name}{suffix}"))
            if target.is_relative_to(top) and target.parent != runtime_dir and len(target.name) < 255:
                target.parent.mkdir(parents=True, exist_ok=True)
                content = f"sentinel for {name!r}\n".encode()
                target.write_bytes(content)
                planted[target] = content
    keep = runtime_dir / "keep.log"  # inside the runtime dir, but no cluster's: also left alone
    keep.write_bytes(b"not a cluster's\n")
    planted[keep] = keep.read_bytes()
    return planted


def _tree(top: Path) -> dict[str, bytes]:
    return {str(p.relative_to(top)): p.read_bytes() for p in sorted(top.rglob("*")) if p.is_file()}


def test_every_verb_refuses_path_like_names_and_touches_nothing(
    sandboxed_runtime: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = _path_like_names(tmp_path)
    planted = _plant_sentinels(sandboxed_runtime, names)
    outer = sandboxed_runtime.parent
    for sentinel in (outer / "victim.log", tmp_path / "victim.log", tmp_path / "absolute.log"):
        assert sentinel in planted  # the sentinels really sit where the names point
    etc_before = Path("/etc/passwd.log").exists()
    before = _tree(tmp_path)
    for verb in VERBS:
        for name in names:
            argv = ["cluster", *(arg.format(name=name) for arg in verb)]
            code = main(argv)
            err = capsys.readouterr().err
            assert code == 2, (argv, err)
            assert err.count("\n") == 1 and err.startswith("balancebench: "), (argv, err)
            # "-dev" reads as an option: a usage error, which is fine, as long as nothing is touched.
            assert "invalid cluster name" in err or name.startswith("-"), (argv, err)
            assert "Traceback" not in err
    assert _tree(tmp_path) == before
    for path, content in planted.items():
        assert path.read_bytes() == content, f"{path} was changed"
    assert Path("/etc/passwd.log").exists() == etc_before


def test_the_library_refuses_them_too(sandboxed_runtime: Path, tmp_path: Path) -> None:
    names = _path_like_names(tmp_path)
    planted = _plant_sentinels(sandboxed_runtime, names)
    provider = NetnsProvider()
    for name in names:
        for call in (
            provider.delete,
            provider.get,
            runtime.log_path,
            runtime.lock_path,
            runtime.socket_path,
            runtime.is_running,
            runtime.cluster_cgroup,
        ):
            with pytest.raises(InvalidInput, match="invalid cluster name"):
                call(name)
    # A stray non-cluster file in the runtime dir is neither listed nor garbage-collected.
    (sandboxed_runtime / "not a cluster.lock").write_bytes(b"")
    assert runtime.running_names() == []
    runtime.collect_garbage()
    assert (sandboxed_runtime / "not a cluster.lock").exists()
    for path, content in planted.items():
        assert path.read_bytes() == content


@pytest.mark.parametrize("name", ["dev", "a", "bb123-nftables", "x" * 32, "0-0"])
def test_good_names_map_to_files_inside_the_runtime_dir(sandboxed_runtime: Path, name: str) -> None:
    assert check_cluster_name(name) == name
    for path in (runtime.log_path(name), runtime.lock_path(name), runtime.socket_path(name)):
        assert path.parent == sandboxed_runtime
    assert NetnsProvider().delete(name) is False  # nothing there: nothing removed, nothing raised


@pytest.mark.parametrize("leaf", ["", ".", "..", "a/b", "../a", "/abs", "a\0b", "x" * 256])
def test_own_path_refuses_anything_but_one_file_name(tmp_path: Path, leaf: str) -> None:
    with pytest.raises(InvalidInput, match="not a plain file name"):
        own_path(tmp_path, leaf)
