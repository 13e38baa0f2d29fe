"""The kind provider offline: the --dry-run plan's key steps, prerequisite checks, one-line failures.

A real kind cluster needs a Docker daemon; the test that brings one up skips, saying so, where there is
none (as on the development and CI machines).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from balancebench.clusters import registry
from balancebench.clusters.base import ClusterSpec, ProviderOptions
from balancebench.clusters.kind import DOCKER, KindProvider, prerequisites
from balancebench.clusters.plan import ApiCall, Command, Config
from balancebench.errors import InvalidInput, MissingFeature

SEED = "loadtests/scenarios/seed.yaml"
REPO = Path(__file__).resolve().parents[2]


def balancebench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "balancebench", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )


def config_block(plan_text: str, name: str) -> dict:
    """The YAML a plan shows under 'write {workdir}/<name>:'."""
    lines = plan_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"write {{workdir}}/{name}:")
    block = []
    for line in lines[start + 1 :]:
        if not line.startswith("         "):
            break
        block.append(line[9:])
    return yaml.safe_load("\n".join(block))


def test_dry_run_ipvs_plan_from_the_cli():
    done = balancebench("run", SEED, "--provider", "kind", "--set", "dataplanes=[ipvs]", "--dry-run")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    config = config_block(text, "kind-config.yaml")
    assert config["networking"]["kubeProxyMode"] == "ipvs"
    [patch] = [yaml.safe_load(p) for p in config["kubeadmConfigPatches"]]
    assert patch["kind"] == "KubeProxyConfiguration" and patch["ipvs"]["scheduler"] == "rr"
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker", "worker"]  # seed: 2 nodes
    cluster = config["name"]
    assert f"kind create cluster --name {cluster} --config" in text
    for image in ("balancebench-echo:dev", "balancebench-locust:dev"):
        assert f"kind load docker-image {image} --name {cluster}" in text
    found = re.search(r"API create Namespace (\S+):", text)
    assert found is not None
    namespace = found.group(1)
    assert namespace.startswith("balancebench-bb")
    assert f"API create Deployment echo -n {namespace}" in text
    assert f"API create StatefulSet locust-worker -n {namespace}" in text
    assert "until 9 pods ready (6 echo, 2 locust-worker, 1 master)" in text
    assert f"kind delete cluster --name {cluster}" in text  # the teardown
    assert "helm install" not in text


def test_dry_run_cilium_plan_from_the_cli():
    done = balancebench(
        "run",
        SEED,
        "--provider",
        "kind",
        "--set",
        "dataplanes=[cilium]",
        "--set",
        "cluster.nodes=3",
        "--dry-run",
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout
    config = config_block(text, "kind-config.yaml")
    assert config["networking"] == {"disableDefaultCNI": True, "kubeProxyMode": "none"}
    assert [n["role"] for n in config["nodes"]].count("worker") == 3
    values = config_block(text, "cilium-values.yaml")
    assert values["kubeProxyReplacement"] is True
    assert values["k8sServiceHost"] == f"{config['name']}-control-plane"
    assert re.search(
        r"helm install cilium cilium --repo \S+ --version \d+\.\d+\.\d+ --namespace kube-system", text
    )
    # Cilium goes in before the images are loaded and the pods created; kind does not wait without a CNI.
    assert text.index("helm install") < text.index("kind load docker-image") < text.index("API create")
    create = next(line for line in text.splitlines() if "kind create cluster" in line)
    assert "--wait" not in create


def test_plan_steps_in_order_and_ipvs_scheduler():
    plan = KindProvider().plan(ClusterSpec(name="dev", nodes=4, sources=3, dataplane="ipvs:lc"))
    kinds = [type(step).__name__ for step in plan.steps]
    first_api = kinds.index("ApiCall")
    assert set(kinds[first_api:]) == {"ApiCall"}  # the API part comes last, after every command
    [config] = [s for s in plan.steps if isinstance(s, Config)]
    assert [n["role"] for n in config.content["nodes"]].count("worker") == 4
    [patch] = [yaml.safe_load(p) for p in config.content["kubeadmConfigPatches"]]
    assert patch["ipvs"]["scheduler"] == "lc"
    builds = [s.argv for s in plan.steps if isinstance(s, Command) and s.argv[:2] == ("docker", "build")]
    assert any(str(REPO / "workloads/echo/Dockerfile") in argv for argv in builds)
    calls = [s for s in plan.steps if isinstance(s, ApiCall)]
    assert (calls[0].verb, calls[0].kind, calls[0].name) == ("create", "Namespace", "balancebench-dev")
    workers = next(c for c in calls if c.kind == "StatefulSet")
    assert workers.body is not None and workers.body["spec"]["replicas"] == 3


def test_keep_leaves_no_teardown():
    plan = KindProvider(ProviderOptions(keep=True)).plan(ClusterSpec(name="dev", dataplane="iptables"))
    assert plan.teardown == ()


def test_dry_run_touches_nothing(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path)}
    done = balancebench(
        "run", SEED, "--provider", "kind", "--out", str(tmp_path / "run"), "--dry-run", env=env
    )
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == []  # no run directory, no ~/.kube, nothing


def docker_daemon_problem() -> str | None:
    return DOCKER.problem()


def test_kind_without_docker_is_one_line_exit_2(tmp_path):
    if docker_daemon_problem() is None:
        pytest.skip("this machine has a Docker daemon: the no-Docker failure cannot be shown here")
    done = balancebench(
        "run", SEED, "--provider", "kind", "--set", "dataplanes=[iptables]", "--out", str(tmp_path / "run")
    )
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("balancebench: --provider kind: ")
    assert "--provider netns" in line
    assert not (tmp_path / "run").exists()


def test_missing_tools_name_what_to_install(tmp_path, monkeypatch):
    """With an empty PATH every tool is missing: one line each, each naming the way out."""
    monkeypatch.setenv("PATH", str(tmp_path))
    problems = prerequisites("cilium")
    assert [p.split(" ", 1)[0] for p in problems[:4]] == ["docker", "kind", "kubectl", "helm"]
    for problem in problems:
        assert "\n" not in problem and "--provider netns" in problem
        assert "install" in problem
    assert any(p.startswith("kind >= 0.24.0") for p in prerequisites("nftables"))
    with pytest.raises(MissingFeature, match=r"--provider kind: docker"):
        KindProvider().check(ClusterSpec(name="dev", dataplane="iptables"))


def test_too_old_tool_is_reported(tmp_path, monkeypatch):
    kind = tmp_path / "kind"
    kind.write_text("#!/bin/sh\necho 'kind v0.19.0 go1.20 linux/amd64'\n")
    kind.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    [old] = [p for p in prerequisites("iptables") if p.startswith("kind")]
    assert "too old (kind 0.19.0)" in old and "upgrade" in old


@pytest.mark.parametrize("dataplane", ["ebpf", "ipvs:nope"])
def test_dataplanes_kind_does_not_run(dataplane):
    with pytest.raises(InvalidInput):
        KindProvider().check(ClusterSpec(name="dev", dataplane=dataplane))


def test_per_pod_echo_options_are_refused():
    spec = ClusterSpec(name="dev", dataplane="iptables", pod_echo_args={"echo-0": ("--latency", "50ms")})
    with pytest.raises(InvalidInput, match="stable pod names"):
        KindProvider().plan(spec)


def test_registry_lists_kind_and_existing():
    assert {"kind", "existing"} <= set(registry.names())
    kind = registry.get("kind", ProviderOptions(keep=True))
    assert isinstance(kind, KindProvider) and kind.options.keep is True
    with pytest.raises(InvalidInput, match="for real clusters"):
        registry.get("netns", ProviderOptions(kubeconfig="/x"))


@pytest.mark.slow
def test_a_real_kind_cluster_comes_up_and_goes():
    why = docker_daemon_problem() or next(iter(prerequisites("iptables")), None)
    if why is not None:
        pytest.skip(f"needs Docker and kind: {why}")
    provider = KindProvider()
    with provider.up(
        ClusterSpec(name="bbtest", nodes=1, targets=2, sources=1, dataplane="iptables")
    ) as cluster:
        status = cluster.status()
        assert len(status.targets()) == 2 and len(status.sources()) == 1
        assert "bbtest" in provider.list()
    assert "bbtest" not in provider.list()


def test_all_dataplanes_on_kind_are_kinds_own():
    done = balancebench("run", SEED, "--provider", "kind", "--set", "dataplanes=all", "--dry-run")
    assert done.returncode == 0, done.stderr
    modes = re.findall(r"kind config: kube-proxy (\w+)", done.stdout)
    assert modes == ["iptables", "ipvs", "nftables", "none"]  # none: Cilium replaces kube-proxy
