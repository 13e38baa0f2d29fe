"""The Kubernetes API code against a stand-in API server speaking the real wire format.

The provider talks to ``tests/clusters/kube_standin.py`` over HTTP exactly as it would to a real API
server: typed objects serialised by the ``kubernetes`` client, list + watch, merge patches of the scale
subresource, deletes, the pod proxy. Echo pods are backed by real echo servers, so readiness flips and
``/metrics`` go through a real process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from balancebench.clusters.base import ClusterSpec, ProviderOptions
from balancebench.clusters.existing import ExistingProvider, KubeApi, KubeCluster, proxy_mode
from balancebench.errors import ClusterError, InvalidInput, MissingFeature
from tests.clusters.kube_standin import Backend, StandIn
from workloads.echo.process import EchoProcess

KUBE_PROXY_IPTABLES = {("kube-system", "kube-proxy"): {"config.conf": "mode: iptables\n"}}


def echo_backend(pod: dict) -> Backend | None:
    """A real echo server for every echo pod, identified as the pod (the downward API's job)."""
    if pod["metadata"]["labels"].get("balancebench.io/role") != "target":
        return None
    echo = EchoProcess(
        env={
            "POD_NAME": pod["metadata"]["name"],
            "POD_IP": pod["status"]["podIP"],
            "NODE_NAME": pod["spec"]["nodeName"],
        }
    ).start()
    return Backend(
        host=echo.host,
        ports={8080: echo.port, 8081: echo.admin_port},
        readiness=(8081, "/readyz"),
        stop=echo.stop,
    )


@pytest.fixture
def standin():
    with StandIn(nodes=["w1", "w2"], config_maps=KUBE_PROXY_IPTABLES, backend_for=echo_backend) as api:
        yield api


def provider_for(standin: StandIn, tmp_path: Path) -> ExistingProvider:
    kubeconfig = tmp_path / "kubeconfig"
    context = standin.kubeconfig(kubeconfig)
    return ExistingProvider(ProviderOptions(kubeconfig=str(kubeconfig), context=context))


def calls(standin: StandIn, method: str, suffix: str) -> list[tuple[str, str, dict]]:
    return [r for r in standin.requests if r[0] == method and r[1].endswith(suffix)]


def test_up_status_scale_kill_ready_down(standin, tmp_path):
    provider = provider_for(standin, tmp_path)
    spec = ClusterSpec(name="t1", nodes=2, targets=3, sources=2, dataplane="iptables")
    cluster = provider.up(spec)
    assert isinstance(cluster, KubeCluster)
    namespace = "balancebench-t1"
    # Every object went in through POST, typed and valid (the stand-in validates strictly).
    for path in ("/namespaces", "/deployments", "/services", "/statefulsets"):
        assert calls(standin, "POST", path), path
    watches = [r for r in standin.requests if r[1].endswith("/pods") and r[2].get("watch") == ["true"]]
    assert watches, "readiness is watched, not polled"

    status = cluster.status()
    assert status.provider == "existing" and status.dataplane == "iptables"
    assert status.nodes == ("w1", "w2")  # the control plane is not a worker
    assert len(status.targets()) == 3 and len(status.sources()) == 2
    assert status.load_master is not None and status.load_master.name.startswith("locust-master-")
    assert status.load_master.name not in {p.name for p in status.pods}  # it sends no load
    assert {p.node for p in status.targets()} == {"w1", "w2"}  # spread over the workers
    assert status.service.cluster_ip.startswith("10.96.") and status.service.node_port == 30080
    assert provider.list() == ["t1"]

    echo = status.targets()[0].name
    code, body = cluster.pod_http(echo, "/metrics")
    assert code == 200 and f'pod="{echo}"'.encode() in body  # a real echo server, named after the pod

    cluster.set_ready(echo, False)
    assert echo not in {p.name for p in cluster.status().targets()}
    assert echo in {p.name for p in cluster.status().targets(ready_only=False)}
    cluster.set_ready(echo, True)
    assert echo in {p.name for p in cluster.status().targets()}
    assert calls(standin, "POST", f"/pods/{echo}:8081/proxy/admin/ready")

    assert len(cluster.scale(5).targets()) == 5
    assert len(calls(standin, "PATCH", "/deployments/echo/scale")) == 1
    assert len(cluster.scale(2).targets()) == 2

    victim = cluster.status().targets()[0].name
    cluster.kill(victim)
    assert calls(standin, "DELETE", f"/pods/{victim}")
    after = cluster.status()
    assert victim not in {p.name for p in after.pods}

    with pytest.raises(InvalidInput, match="only echo pods"):
        cluster.set_ready(after.sources()[0].name, False)

    cluster.down()
    assert standin.objects("pods", namespace) == [] and standin.objects("namespaces") == [
        o for o in standin.objects("namespaces") if o["metadata"]["name"] == "kube-system"
    ]
    assert provider.list() == []
    cluster.down()  # safe to repeat
    assert provider.delete("t1") is False


def test_exec_maps_this_machines_python_and_repository_into_the_image(standin, tmp_path):
    import sys

    from balancebench.loadrun import LOCUSTFILE

    provider = provider_for(standin, tmp_path)
    cluster = KubeCluster("t2", provider._api(), dataplane="iptables")
    argv = cluster.exec_command("locust-worker-0", [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)])
    assert argv[-5:] == ["python", "-m", "locust", "-f", "/app/loadtests/locustfile.py"]


def test_exec_runs_kubectl_in_the_namespace(standin, tmp_path):
    provider = provider_for(standin, tmp_path)
    cluster = KubeCluster("t2", provider._api(), dataplane="iptables")
    argv = cluster.exec_command("locust-worker-0", ["locust", "--worker"], env={"CELL": "a"})
    assert argv[:5] == ["kubectl", "--kubeconfig", str(tmp_path / "kubeconfig"), "--context", "standin"]
    assert argv[5:] == [
        "exec",
        "-i",
        "-n",
        "balancebench-t2",
        "locust-worker-0",
        "--",
        "env",
        "CELL=a",
        "locust",
        "--worker",
    ]


@pytest.mark.parametrize(
    ("config_maps", "expected"),
    [
        ({("kube-system", "kube-proxy"): {"config.conf": "mode: ipvs\nipvs:\n  scheduler: lc\n"}}, "ipvs:lc"),
        ({("kube-system", "kube-proxy"): {"config.conf": "mode: ipvs\nipvs:\n  scheduler: ''\n"}}, "ipvs"),
        ({("kube-system", "kube-proxy"): {"config.conf": "mode: ''\n"}}, "iptables"),
        ({("kube-system", "kube-proxy"): {"config.conf": "mode: nftables\n"}}, "nftables"),
        ({("kube-system", "cilium-config"): {"kube-proxy-replacement": "true"}}, "cilium"),
        ({}, "unknown"),
    ],
)
def test_proxy_mode_read_from_the_configmaps(tmp_path, config_maps, expected):
    with StandIn(config_maps=config_maps) as standin:
        provider = provider_for(standin, tmp_path)
        assert provider.detect_dataplane(provider._api()) == expected


def test_proxy_mode_unknown_when_forbidden(tmp_path):
    with StandIn(config_maps=KUBE_PROXY_IPTABLES, forbid={("configmaps", "kube-system")}) as standin:
        provider = provider_for(standin, tmp_path)
        assert provider.detect_dataplane(provider._api()) == "unknown"
    assert proxy_mode(None, None) == "unknown"


def test_a_different_proxy_mode_is_refused_before_anything_is_created(standin, tmp_path):
    provider = provider_for(standin, tmp_path)
    with pytest.raises(InvalidInput, match=r"proxy mode is iptables, not cilium: .*dataplanes=\[iptables\]"):
        provider.up(ClusterSpec(name="t3", dataplane="cilium"))
    assert not calls(standin, "POST", "/namespaces")


def test_a_failed_up_removes_its_namespace(tmp_path):
    forbid = {("statefulsets", "balancebench-t4")}
    with StandIn(config_maps=KUBE_PROXY_IPTABLES, forbid=forbid, backend_for=echo_backend) as standin:
        provider = provider_for(standin, tmp_path)
        with pytest.raises(ClusterError, match="403"):
            provider.up(ClusterSpec(name="t4", targets=1, sources=1, dataplane="iptables"))
        assert [o["metadata"]["name"] for o in standin.objects("namespaces")] == ["kube-system"]
        assert standin.objects("deployments") == [] and standin.objects("pods") == []


def test_a_foreign_namespace_is_never_deleted(standin, tmp_path):
    standin.create("api/v1", "namespaces", "", {"metadata": {"name": "balancebench-mine"}})
    provider = provider_for(standin, tmp_path)
    with pytest.raises(InvalidInput, match="not made by balancebench"):
        provider.delete("mine")
    assert "balancebench-mine" in [o["metadata"]["name"] for o in standin.objects("namespaces")]


def test_kubeconfig_and_context_errors_are_one_line(tmp_path, standin):
    missing = ExistingProvider(ProviderOptions(kubeconfig=str(tmp_path / "nope")))
    with pytest.raises(MissingFeature, match="no kubeconfig at"):
        missing.check(ClusterSpec(name="t5", dataplane="iptables"))
    with pytest.raises(MissingFeature, match="pass --kubeconfig FILE or set KUBECONFIG"):
        missing.get("t5")  # the cluster verbs
    kubeconfig = tmp_path / "kubeconfig"
    standin.kubeconfig(kubeconfig)
    wrong = ExistingProvider(ProviderOptions(kubeconfig=str(kubeconfig), context="prod"))
    with pytest.raises(InvalidInput, match=r"no context 'prod' in kubeconfig .*: its contexts are standin"):
        wrong.check(ClusterSpec(name="t5", dataplane="iptables"))


def test_an_unreachable_api_server_is_one_line(tmp_path):
    with StandIn() as standin:
        provider = provider_for(standin, tmp_path)
    api: KubeApi = provider._api()  # the server is gone now
    with pytest.raises(ClusterError, match=r"cannot reach the API server at http://127\.0\.0\.1"):
        api.namespaces()
