"""Every file in manifests/ and every rendering of it validates offline against its real schema.

Kubernetes objects: the OpenAPI schema of Kubernetes 1.36 (kind 0.32's default node image), strict (an
unknown field is an error), through kubernetes-validate. kind configs: kind's v1alpha4 fields, vendored
as manifests/kind/v1alpha4.schema.json. Cilium values: the pinned chart's values.schema.json entries.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from balancebench.clusters.base import ClusterSpec
from balancebench.clusters.manifests import (
    CILIUM,
    KIND,
    KUBERNETES,
    MANIFESTS,
    cilium_chart,
    cilium_values,
    kind_config,
    kind_dataplane,
    kube_proxy_patch,
    load_schema,
    pod_templates,
    workload_objects,
)
from balancebench.errors import InvalidInput

KUBERNETES_VERSION = "1.36.0"
KIND_SCHEMA = load_schema(KIND / "v1alpha4.schema.json")
CILIUM_SCHEMA = load_schema(CILIUM / "values.schema.json")

SPECS = [
    ClusterSpec(name="dev"),
    ClusterSpec(name="big", nodes=5, targets=20, sources=8, echo_args=("--max-connection-age", "1s")),
    ClusterSpec(name="one", nodes=1, targets=1, sources=1, service_port=8000, node_port=31000),
]
KIND_DATAPLANES = ["iptables", "ipvs", "ipvs:lc", "ipvs:mh", "nftables", "cilium"]


def kubernetes_files() -> list[Path]:
    return sorted(KUBERNETES.glob("*.yaml"))


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@pytest.mark.parametrize("path", kubernetes_files(), ids=lambda p: p.name)
def test_kubernetes_files_validate_as_written(path):
    for doc in documents(path):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_rendered_workloads_validate(spec):
    objects = workload_objects(spec, namespace=f"balancebench-{spec.name}")
    assert [o["kind"] for o in objects] == [
        "Namespace", "Deployment", "Service", "Deployment", "Service", "StatefulSet",
    ]  # fmt: skip
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    assert by_name["Deployment", "echo"]["spec"]["replicas"] == spec.targets
    assert by_name["StatefulSet", "locust-worker"]["spec"]["replicas"] == spec.sources
    [port] = by_name["Service", "echo"]["spec"]["ports"]
    assert (port["port"], port["nodePort"]) == (spec.service_port, spec.node_port)
    [echo] = by_name["Deployment", "echo"]["spec"]["template"]["spec"]["containers"]
    assert echo["args"][4:] == list(spec.echo_args)
    assert {o["metadata"].get("namespace", o["metadata"]["name"]) for o in objects} == {
        f"balancebench-{spec.name}"
    }


def test_the_validator_rejects_what_kubernetes_would():
    [service] = documents(KUBERNETES / "echo-service.yaml")
    broken = copy.deepcopy(service)
    broken["spec"]["ports"][0]["nodeport"] = 30080  # wrong case: Kubernetes would drop it
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_echo_identity_readiness_and_spread():
    [deployment] = documents(KUBERNETES / "echo-deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_IP": "status.podIP", "NODE_NAME": "spec.nodeName"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    [spread] = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["maxSkew"] == 1
    assert spread["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    # Workers only: the control plane is neither counted by the spread nor scheduled on.
    assert spread["nodeTaintsPolicy"] == spread["nodeAffinityPolicy"] == "Honor"
    [term] = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert term["matchExpressions"] == [
        {"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"}
    ]
    [service] = documents(KUBERNETES / "echo-service.yaml")
    assert service["spec"]["type"] == "NodePort"  # a ClusterIP and a NodePort
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("spec", SPECS[:1], ids=lambda s: s.name)
def test_least_privilege_in_every_pod(spec):
    templates = dict(pod_templates(workload_objects(spec, namespace="balancebench-dev")))
    assert set(templates) == {"echo", "locust-master", "locust-worker"}
    for name, pod in templates.items():
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert "hostNetwork" not in pod and "hostPID" not in pod, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert "add" not in context["capabilities"], name
            resources = container["resources"]
            assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}, name


@pytest.mark.parametrize("path", sorted(KIND.glob("*.yaml")), ids=lambda p: p.name)
def test_kind_files_validate_as_written(path):
    [config] = documents(path)
    jsonschema.validate(config, KIND_SCHEMA)


@pytest.mark.parametrize("dataplane", KIND_DATAPLANES)
@pytest.mark.parametrize("workers", [1, 2, 5])
def test_rendered_kind_configs_validate(dataplane, workers):
    config = kind_config("dev", dataplane, workers=workers)
    jsonschema.validate(config, KIND_SCHEMA)
    assert config["name"] == "balancebench-dev"
    roles = [node["role"] for node in config["nodes"]]
    assert roles == ["control-plane"] + ["worker"] * workers
    plane = kind_dataplane(dataplane)
    assert config["networking"]["kubeProxyMode"] == plane.kube_proxy_mode
    patch = kube_proxy_patch(config)
    if dataplane.startswith("ipvs"):
        assert patch is not None
        assert patch["apiVersion"] == "kubeproxy.config.k8s.io/v1alpha1" and patch["mode"] == "ipvs"
        assert patch["ipvs"]["scheduler"] == (dataplane.partition(":")[2] or "rr")
    else:
        assert patch is None
    if dataplane == "cilium":
        assert config["networking"] == {"disableDefaultCNI": True, "kubeProxyMode": "none"}


def test_kind_schema_has_every_field_of_kind_types_and_refuses_others():
    networking = KIND_SCHEMA["properties"]["networking"]["properties"]
    assert networking["kubeProxyMode"]["enum"] == ["iptables", "ipvs", "nftables", "none"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**kind_config("dev", "iptables", workers=1), "nodez": []}, KIND_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {
                "kind": "Cluster",
                "apiVersion": "kind.x-k8s.io/v1alpha4",
                "networking": {"kubeProxyMode": "ebpf"},
            },
            KIND_SCHEMA,
        )


@pytest.mark.parametrize("name", ["ebpf", "ipvs:bogus", "nftables:rr", ""])
def test_unknown_kind_dataplanes_are_refused(name):
    with pytest.raises(InvalidInput):
        kind_dataplane(name)


def test_cilium_values_validate_against_the_chart_schema():
    [written] = documents(CILIUM / "values.yaml")
    rendered = cilium_values("dev")
    for values in (written, rendered):
        jsonschema.validate(values, CILIUM_SCHEMA)
    assert rendered["kubeProxyReplacement"] is True
    assert rendered["k8sServiceHost"] == "balancebench-dev-control-plane"
    assert rendered["k8sServicePort"] == 6443
    assert rendered["ipam"] == {"mode": "kubernetes"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**rendered, "kubeProxyReplacment": True}, CILIUM_SCHEMA)  # a typo
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**rendered, "k8sServicePort": [6443]}, CILIUM_SCHEMA)


def test_cilium_chart_is_pinned():
    chart = cilium_chart()
    assert chart["name"] == "cilium" and chart["namespace"] == "kube-system"
    assert all(part.isdigit() for part in str(chart["version"]).split(".")), chart["version"]


def test_manifests_folder_holds_only_checked_files():
    checked = {*KUBERNETES.glob("*.yaml"), *KIND.glob("*.yaml"), *CILIUM.glob("*")} | {
        KIND / "v1alpha4.schema.json"
    }
    every = {p for p in MANIFESTS.rglob("*") if p.is_file() and p.name != "README.md"}
    assert every <= checked, sorted(str(p) for p in every - checked)
