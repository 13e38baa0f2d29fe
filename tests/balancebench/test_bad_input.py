"""Bad input, as a hostile but realistic user types it: one line, exit 2, no traceback, nothing created.

Each case runs the real CLI in-process from a scratch working directory. After it: the exit code is 2, stderr
is exactly one ``balancebench: …`` line without a traceback, no run directory exists (neither ``results/``
nor the ``--out`` target), no cluster was started (the runtime directory holds nothing new), and no file in
the scratch directory was created, changed or removed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from balancebench.cli import main
from balancebench.clusters.netns import runtime

GOOD = """\
name: t
cluster: {nodes: 1, targets: 2, sources: 1}
load: {duration: 2s, warmup: 0s}
policies: [keepalive]
"""


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]
    says: str
    files: dict[str, bytes] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None


def _nested(depth: int) -> bytes:
    return b"name: t\npolicies: [keepalive]\nx: " + b"[" * depth + b"]" * depth + b"\n"


def _alias_bomb() -> bytes:
    lines = ["name: t", "policies: [keepalive]", "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    previous = "a"
    for level in range(7):
        lines.append(f"b{level}: &b{level} [" + ", ".join([f"*{previous}"] * 10) + "]")
        previous = f"b{level}"
    return ("\n".join(lines) + "\n").encode()


def _run(*extra: str) -> list[str]:
    return ["run", "good.yaml", "--out", "out", *extra]


def _out(directory: str) -> list[str]:
    return ["run", "good.yaml", "--out", directory]


LONG = "a" * 300

CASES = [
    # the scenario path
    Case("scenario-missing", ["run", "nope.yaml"], "no such scenario file"),
    Case("scenario-is-a-directory", ["run", "."], "is a directory"),
    Case("scenario-is-proc", ["run", "/proc"], "is a directory"),
    Case("scenario-is-dev-zero", ["run", "/dev/zero"], "larger than 1 MiB"),
    Case("scenario-huge", ["run", "big.yaml"], "larger than 1 MiB", {"big.yaml": b"#" * (2 << 20)}),
    Case("scenario-name-too-long", ["run", LONG + ".yaml"], "file name too long"),
    Case("scenario-not-utf8", ["run", "l1.yaml"], "not UTF-8", {"l1.yaml": b"name: t\nx: \xff\xfe\n"}),
    Case("scenario-utf16", ["run", "u.yaml"], "not UTF-8", {"u.yaml": "name: t\n".encode("utf-16")}),
    Case("scenario-nested-lists", ["run", "n.yaml"], "nested deeper", {"n.yaml": _nested(5000)}),
    Case("scenario-nested-33", ["run", "n.yaml"], "nested deeper", {"n.yaml": _nested(33)}),
    Case("scenario-alias-bomb", ["run", "b.yaml"], "expands to more than", {"b.yaml": _alias_bomb()}),
    Case("scenario-duplicate-key", ["run", "d.yaml"], "given twice", {"d.yaml": b"name: t\nname: u\n"}),
    Case("scenario-not-a-mapping", ["run", "l.yaml"], "a scenario is a mapping", {"l.yaml": b"- a\n"}),
    Case("scenario-bad-yaml", ["run", "y.yaml"], "not valid YAML", {"y.yaml": b"name: [t\n"}),
    Case("scenario-tab-yaml", ["run", "y.yaml"], "not valid YAML", {"y.yaml": b"name:\n\t- t\n"}),
    # --out
    Case("out-is-a-file", _out("good.yaml"), "is a file"),
    Case("out-below-a-file", _out("good.yaml/sub"), "not a directory"),
    Case("out-in-proc", _out("/proc/bb-out"), "no such file or directory"),
    Case("out-in-sys", _out("/sys/bb-out"), "pass a directory you can create and write"),
    Case("out-name-too-long", _out(f"x/{LONG}/y"), "file name too long"),
    Case("out-not-empty", _out("full"), "already holds files", {"full/keep": b"mine"}),
    # --set
    Case("set-bad-yaml-list", _run("--set", "load.duration=["), "--set load.duration: line 1 is not valid"),
    Case("set-bad-yaml-map", _run("--set", "cluster={nodes: 1"), "--set cluster"),
    Case("set-no-equals", _run("--set", "load.duration"), "expected key=value"),
    Case(
        "unknown-path", _run("--set", "paths=[clusterip, warp]"), "unknown path 'warp': choose from clusterip"
    ),
    Case(
        "path-bad-option", _run("--set", "paths=[client-side:sticky]"), "its options are round_robin, random"
    ),
    Case(
        "path-missing-node",
        _run("--set", "paths=[nodeport:node-5]"),
        "path nodeport:node-5 enters node-5, which does not exist: cluster.nodes is",
    ),
    Case(
        "path-policy-spelling",
        _run("--set", "paths=[nodeport:node-0:local]"),
        "path nodeport:node-0:local: externalTrafficPolicy is spelled Cluster or Local",
    ),
    Case(
        "path-policy-unknown",
        _run("--set", "paths=[nodeport:node-0:Sticky]"),
        "externalTrafficPolicy must be Cluster or Local, got 'Sticky'",
    ),
    Case(
        "path-policy-not-a-nodeport",
        _run("--set", "paths=[clusterip:Local]"),
        "path clusterip:Local: clusterip has no externalTrafficPolicy, only the paths through NodePorts do",
    ),
    Case(
        "path-nodeport-on-ebpf",
        _run("--set", "paths=[nodeport:Local]", "--set", "dataplanes=[ebpf]"),
        "path nodeport cannot run on dataplane ebpf: its socket load balancing hooks connect() in the",
    ),
    Case("set-empty-key", _run("--set", "=5"), "expected key=value"),
    Case("set-empty-part", _run("--set", "load..duration=5s"), "expected key=value"),
    Case("set-not-a-section", _run("--set", "name.x=1"), "name is not a section"),
    Case("set-duplicate-key", _run("--set", "cluster={nodes: 1, nodes: 2}"), "given twice"),
    Case("set-deep", _run("--set", "x=" + "[" * 40 + "]" * 40), "nested deeper"),
    # names longer than a file name, or that would split a cell id
    Case("name-too-long", _run("--set", f"name={LONG}"), "name: String should have at most 64"),
    Case("name-path", _run("--set", "name=../x"), "name: String should match pattern"),
    Case("label-slash", _run("--set", "policies=[{policy: keepalive, name: a/b}]"), "policies.0.name"),
    Case("label-long", _run("--set", f"policies=[{{policy: keepalive, name: {LONG}}}]"), "policies.0.name"),
    # duplicates
    Case("dataplane-twice", _run("--set", "dataplanes=[nftables, nftables]"), "listed twice"),
    Case("policy-key-twice", _run("--set", "policies=['idle=1s,idle=2s']"), "sets idle twice"),
    Case("policy-alias-twice", _run("--set", "policies=['idle=1s,idle-timeout=2s']"), "sets idle twice"),
    Case("policy-keepalive-twice", _run("--set", "policies=['keepalive,per-request']"), "keepalive twice"),
    Case("policy-label-twice", _run("--set", "policies=[okhttp, okhttp]"), "listed twice"),
    # checks that used to come after the cluster was up
    Case("echo-pod-missing", _run("--set", "echo.pods.echo-7.latency=5ms"), "echo-7, which does not exist"),
    Case("echo-pod-bad-name", _run("--set", "echo.pods.web-1.latency=5ms"), "echo pods are named"),
    Case(
        "driver-policy-mismatch",
        _run("--set", "load.driver=requests", "--set", "policies=[okhttp]"),
        "--set load.driver=policy",
    ),
    Case(
        "driver-max-age",
        _run("--set", "load.driver=httpx", "--set", "policies=['max-age=1s']"),
        "load.driver: policy",
    ),
    # protocols (issue 18): a knob the protocol's client lacks, an unknown protocol, headless without gRPC
    Case("protocol-unknown", _run("--set", "load.protocol=quic"), "load.protocol"),
    Case(
        "protocol-grpc-max-age",
        _run("--set", "load.protocol=grpc", "--set", "policies=['max-age=1s']"),
        "the client has no max-age; use the server's max_connection_age",
    ),
    Case(
        "protocol-grpc-rr-no-endpoints",
        _run("--set", "load.protocol=grpc", "--set", "policies=[grpc-rr]"),
        "lb=round_robin needs the endpoints of a headless Service (load.service: headless)",
    ),
    Case(
        "protocol-h2-per-request",
        _run("--set", "load.protocol=h2", "--set", "policies=[per-request]"),
        "protocol h2: the client has no keepalive",
    ),
    Case(
        "protocol-http1-max-streams",
        _run("--set", "policies=['max-streams=4']"),
        "protocol http1: the client has no max-streams",
    ),
    Case(
        "protocol-headless-http1",
        _run("--set", "load.service=headless"),
        "service headless is for protocol grpc",
    ),
    Case(
        "protocol-tls-real-driver",
        _run("--set", "load.protocol=h2-tls", "--set", "load.driver=httpx", "--set", "policies=[keepalive]"),
        "is spoken by the policy driver only",
    ),
    Case(
        "echo-override-unknown",
        _run("--set", "policies=[{policy: grpc, echo: {latency: 1s}}]"),
        "allowed are",
    ),
    # numbers: finite and in range
    Case("duration-nan", _run("--set", "load.duration=.nan"), "finite number"),
    Case("duration-inf", _run("--set", "load.duration=.inf"), "finite number"),
    Case("duration-huge", _run("--set", "load.duration=100000h"), "at most 24h"),
    Case("duration-1e300", _run("--set", "load.duration=1.0e+300"), "at most 24h"),
    Case("duration-negative", _run("--set", "load.duration=-1"), "must not be negative"),
    Case("think-inf", _run("--set", "load.think_time=-.inf"), "load.think_time"),
    Case("rate-inf", _run("--set", "load.model=open", "--set", "load.rate=.inf"), "finite number"),
    Case("rate-huge", _run("--set", "load.model=open", "--set", "load.rate=1e12"), "load.rate"),
    Case("users-huge", _run("--set", "load.users_per_source=1000000"), "less than or equal to 1000"),
    Case("targets-huge", _run("--set", "cluster.targets=1000000000"), "cluster.targets"),
    Case("nodes-zero", _run("--set", "cluster.nodes=0"), "cluster.nodes"),
    Case("error-rate-nan", _run("--set", "echo.error_rate=.nan"), "finite number"),
    Case("cpu-inf", _run("--set", "echo.cpu_ms=.inf"), "finite number"),
    Case("latency-huge", _run("--set", "echo.latency=1000h"), "at most 24h"),
    Case("seed-negative", _run("--set", "seed=-1"), "seed"),
    Case("seed-huge", _run("--set", f"seed={2**64}"), "seed"),
    Case("burst-huge", _run("--set", "load.burst=10000000000000", "--set", "load.pause=1s"), "load.burst"),
    Case("repetitions-huge", _run("--set", "repetitions=100000"), "repetitions"),
    Case("policy-idle-nan", _run("--set", "policies=['idle=nan']"), "idle must be a duration"),
    # sizes this machine cannot hold (the limits name their derivation)
    Case(
        "records-too-many",
        _run(
            "--set", "load.duration=24h", "--set", "cluster.sources=16", "--set", "load.users_per_source=100"
        ),
        "records",
    ),
    Case(
        "cluster-up-memory",
        ["cluster", "up", "--name", "big", "--targets", "20000", "--nodes", "200"],
        "MB per echo pod",
    ),
    Case(
        "cluster-up-ebpf-endpoints",
        ["cluster", "up", "--name", "big", "--dataplane", "ebpf", "--targets", "5000", "--nodes", "40"],
        "dataplane ebpf holds at most 4,096 endpoints per Service, 5,000 echo pods asked",
    ),
    Case(
        "cluster-up-addresses",
        ["cluster", "up", "--name", "big", "--targets", "600", "--nodes", "1"],
        "more than a node's /24 holds",
    ),
    # kubeconfig for the existing provider: read with the same limits as a scenario
    Case(
        "kubeconfig-missing", _run("--provider", "existing", "--kubeconfig", "nope"), "no kubeconfig at nope"
    ),
    Case(
        "kubeconfig-nested",
        _run("--provider", "existing", "--kubeconfig", "n.yaml"),
        "nested deeper",
        {"n.yaml": _nested(5000)},
    ),
    Case(
        "kubeconfig-bomb",
        _run("--provider", "existing", "--kubeconfig", "b.yaml"),
        "expands to more than",
        {"b.yaml": _alias_bomb()},
    ),
    Case(
        "kubeconfig-not-utf8",
        _run("--provider", "existing", "--kubeconfig", "k"),
        "not UTF-8",
        {"k": b"\xff\xfe"},
    ),
    Case(
        "kubeconfig-list",
        _run("--provider", "existing", "--kubeconfig", "k"),
        "is not a mapping",
        {"k": b"- a\n"},
    ),
    Case(
        "kubeconfig-no-context",
        _run("--provider", "existing", "--kubeconfig", "k"),
        "no context 'x'",
        {"k": b"current-context: x\n"},
    ),
    # report / compare
    Case("report-missing", ["report", "nope"], "does not exist"),
    Case("report-a-file", ["report", "good.yaml"], "is not a directory"),
    Case("report-proc", ["report", "/proc"], "has no run.json"),
    Case("report-long", ["report", LONG], "file name too long"),
    Case("compare-not-json", ["compare", "good.yaml", "good.yaml"], "not valid JSON"),
    Case("compare-nan", ["compare", ".", ".", "--max-jain-drop", "nan"], "must be a number >= 0, got nan"),
    Case("compare-inf", ["compare", ".", ".", "--max-p99-increase", "inf"], "must be a number >= 0, got inf"),
    Case(
        "cluster-up-huge-nodes",
        ["cluster", "up", "--name", "big", "--nodes", "9" * 30],
        "--nodes must be at most",
    ),
    *(
        [Case("kind-missing", ["cluster", "list", "--provider", "kind"], "kind >= 0.20.0")]
        if shutil.which("kind") is None
        else []
    ),
]


def _snapshot(top: Path) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    for path in sorted(top.rglob("*")):
        found[str(path.relative_to(top))] = path.read_bytes() if path.is_file() else None
    return found


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_exit_2_and_creates_nothing(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "good.yaml").write_text(GOOD)
    for name, content in case.files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(content)
    monkeypatch.chdir(work)
    own_runtime = tmp_path / "runtime"
    monkeypatch.setenv(runtime.RUNTIME_DIR_ENV, str(own_runtime))
    before = _snapshot(tmp_path)

    code = main(case.argv)

    err = capsys.readouterr().err
    assert code == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("balancebench: ") and "Traceback" not in err, err
    assert case.says in err, err
    assert not (work / "results").exists() and not (work / "out").exists(), "a run directory was made"
    assert not list(own_runtime.glob("*")) if own_runtime.exists() else True, "a cluster was started"
    assert not Path("/proc/bb-out").exists() and not Path("/sys/bb-out").exists()
    assert _snapshot(tmp_path) == before, "a file was created, changed or removed"


def test_a_programming_error_keeps_its_traceback_and_asks_for_a_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from balancebench.clusters import registry

    def broken(provider: str | None = None) -> list[tuple[str, str]]:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(registry, "running_clusters", broken)
    code = main(["cluster", "list"])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err
    assert err.strip().splitlines()[-1].startswith("balancebench: ZeroDivisionError: this is a bug")


def test_root_can_still_not_write_a_read_only_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only place: a read-only bind mount in a private mount namespace (root only)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a read-only mount")
    import subprocess
    import sys

    target = tmp_path / "ro"
    target.mkdir()
    (tmp_path / "good.yaml").write_text(GOOD)
    script = (
        f"mount --bind {target} {target} && mount -o remount,bind,ro {target} && "
        f"{sys.executable} -m balancebench run {tmp_path / 'good.yaml'} --out {target / 'run'}"
    )
    done = subprocess.run(
        ["unshare", "--mount", "--propagation=private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "read-only file system" in done.stderr, done.stderr
    assert not (target / "run").exists()
