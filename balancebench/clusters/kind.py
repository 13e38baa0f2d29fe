"""kind clusters: one control plane and the scenario's nodes as workers, per kube-proxy mode or Cilium.

``up`` is an ordered plan (see ``plan``): build the echo and Locust images, write the kind config from
``manifests/kind/``, ``kind create cluster`` (its kubeconfig into a private folder, never ``~/.kube``),
install Cilium with Helm for ``cilium``, ``kind load docker-image`` both images, then create the
workloads through the Kubernetes API (``balancebench.clusters.existing``) and watch until every pod is
ready. A failure deletes the kind cluster again unless ``--keep``; so does the end of a run.
Clusters are named ``balancebench-<name>`` and found again by that name (``kind get clusters``).

    $ balancebench run loadtests/scenarios/seed.yaml --provider kind --set 'dataplanes=[ipvs:lc]' --dry-run

    >>> print(KindProvider().plan(ClusterSpec(name="dev", dataplane="cilium")).render())
"""

from __future__ import annotations

import atexit
import contextlib
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from balancebench import shell
from balancebench.clusters.base import ClusterSpec, ProviderOptions
from balancebench.clusters.existing import (
    READY_TIMEOUT,
    KubeApi,
    KubeCluster,
    bring_up,
    check_kube_spec,
    create_calls,
)
from balancebench.clusters.manifests import (
    ECHO_IMAGE,
    KIND_DATAPLANES,
    LOCUST_IMAGE,
    MANIFESTS,
    cilium_chart,
    cilium_values,
    kind_cluster_name,
    kind_config,
    kind_dataplane,
    namespace_for,
)
from balancebench.clusters.plan import WORKDIR, ApiCall, Command, Config, Plan, Step
from balancebench.errors import BalancebenchError, CommandError, InvalidInput, MissingFeature
from balancebench.names import check_cluster_name

REPO = MANIFESTS.parent
"""The repository root: the build context of both images."""

NO_DOCKER_HINT = "or use --provider netns, which needs none of docker, kind or helm"


@dataclass(frozen=True, kw_only=True)
class Tool:
    """A program the kind provider runs, the oldest version that works, and where to get it."""

    name: str
    version_argv: tuple[str, ...]
    pattern: str
    minimum: tuple[int, ...]
    install: str
    why: str

    def problem(self, minimum: tuple[int, ...] | None = None) -> str | None:
        """None if the tool is there and new enough; else one line saying what to install."""
        least = minimum or self.minimum
        wanted = f"{self.name} >= {_dotted(least)} ({self.why})"
        if shutil.which(self.name) is None:
            return f"{wanted} is not installed: install it ({self.install}), {NO_DOCKER_HINT}"
        try:
            done = shell.run(self.version_argv, check=False, timeout=20)
        except CommandError as exc:
            return f"{wanted}: '{exc.pretty_command()}' failed ({exc.output.strip()}), {NO_DOCKER_HINT}"
        output = (done.stdout or "") + (done.stderr or "")
        found = re.search(self.pattern, done.stdout or "")
        if done.returncode != 0 or found is None:
            last = output.strip().splitlines()[-1] if output.strip() else f"exit {done.returncode}"
            if self.name == "docker":
                return (
                    f"docker is installed but its daemon does not answer ({last}): start Docker, "
                    f"{NO_DOCKER_HINT}"
                )
            return f"{wanted}: could not read its version ({last}), {NO_DOCKER_HINT}"
        version = tuple(int(part) for part in found.group(1).split("."))
        if version < least:
            return (
                f"{wanted} is too old ({self.name} {found.group(1)}): upgrade it ({self.install}), "
                f"{NO_DOCKER_HINT}"
            )
        return None


DOCKER = Tool(
    name="docker",
    version_argv=("docker", "version", "--format", "{{.Server.Version}}"),
    pattern=r"^(\d+\.\d+)",
    minimum=(20, 10),
    install="Docker Engine, https://docs.docker.com/engine/install/",
    why="kind runs its nodes as containers",
)
KIND = Tool(
    name="kind",
    version_argv=("kind", "version"),
    pattern=r"v(\d+\.\d+\.\d+)",
    minimum=(0, 20, 0),
    install="https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
    why="creates the cluster",
)
KUBECTL = Tool(
    name="kubectl",
    version_argv=("kubectl", "version", "--client"),
    pattern=r"v(\d+\.\d+)",
    minimum=(1, 27),
    install="https://kubernetes.io/docs/tasks/tools/",
    why="exec into pods",
)
HELM = Tool(
    name="helm",
    version_argv=("helm", "version", "--short"),
    pattern=r"v(\d+\.\d+)",
    minimum=(3, 8),
    install="https://helm.sh/docs/intro/install/",
    why="installs Cilium",
)
NFTABLES_KIND = (0, 24, 0)
"""kind 0.23 added kubeProxyMode nftables; 0.24 is the first whose default node image (1.31) runs it."""


def prerequisites(dataplane: str | None) -> list[str]:
    """Every missing or too old tool for ``dataplane`` (None: any dataplane), one line each."""
    plane = kind_dataplane(dataplane) if dataplane else None
    checks: list[tuple[Tool, tuple[int, ...] | None]] = [(DOCKER, None), (KIND, None), (KUBECTL, None)]
    if plane is not None and plane.kube_proxy_mode == "nftables":
        checks[1] = (KIND, NFTABLES_KIND)
    if plane is not None and plane.cilium:
        checks.append((HELM, None))
    problems = [problem for tool, least in checks if (problem := tool.problem(least)) is not None]
    if plane is not None and plane.kube_proxy_mode == "ipvs" and not host_has_ipvs():
        problems.append(
            "kube-proxy's IPVS mode on kind needs the ip_vs module in this machine's kernel (kind nodes "
            "share it), and it has none: choose iptables, nftables or cilium, or use --provider netns "
            "(its ipvs dataplane brings its own kernel)"
        )
    return problems


def host_has_ipvs() -> bool:
    if Path("/proc/net/ip_vs").exists():
        return True
    release = Path("/proc/sys/kernel/osrelease").read_text().strip()
    modules = Path("/lib/modules") / release / "kernel" / "net" / "netfilter" / "ipvs"
    return any(modules.glob("ip_vs.ko*"))


def build_steps() -> list[Command]:
    """The two images every kind cluster loads."""
    return [
        Command(
            argv=(
                "docker",
                "build",
                "-f",
                str(REPO / "workloads/echo/Dockerfile"),
                "-t",
                ECHO_IMAGE,
                str(REPO),
            ),
            why="build the echo image",
        ),
        Command(
            argv=("docker", "build", "-f", str(REPO / "loadtests/Dockerfile"), "-t", LOCUST_IMAGE, str(REPO)),
            why="build the Locust image (locustfile, pool policies, record schema)",
        ),
    ]


def create_steps(spec: ClusterSpec) -> list[Step]:
    """Everything ``up`` does for ``spec``, in order."""
    plane = kind_dataplane(spec.dataplane)
    kind_name = kind_cluster_name(spec.name)
    kubeconfig = f"{WORKDIR}/kubeconfig"
    steps: list[Step] = [*build_steps()]
    steps.append(
        Config(
            path=f"{WORKDIR}/kind-config.yaml",
            content=kind_config(spec.name, spec.dataplane, workers=spec.nodes),
            why=f"kind config: kube-proxy {plane.kube_proxy_mode}, {spec.nodes} worker node(s)",
        )
    )
    create = ["kind", "create", "cluster", "--name", kind_name, "--config", f"{WORKDIR}/kind-config.yaml"]
    create += ["--kubeconfig", kubeconfig]
    # Without a CNI the nodes stay NotReady until Cilium is in: kind must not wait for them.
    create += [] if plane.cilium else ["--wait", "180s"]
    steps.append(Command(argv=tuple(create), why=f"create the kind cluster {kind_name}", timeout=900))
    if plane.cilium:
        chart = cilium_chart()
        steps.append(
            Config(
                path=f"{WORKDIR}/cilium-values.yaml",
                content=cilium_values(spec.name),
                why="Cilium Helm values: kube-proxy replacement",
            )
        )
        steps.append(
            Command(
                argv=(
                    "helm",
                    "install",
                    str(chart["release"]),
                    str(chart["name"]),
                    "--repo",
                    str(chart["repository"]),
                    "--version",
                    str(chart["version"]),
                    "--namespace",
                    str(chart["namespace"]),
                    "--kubeconfig",
                    kubeconfig,
                    "--values",
                    f"{WORKDIR}/cilium-values.yaml",
                    "--wait",
                    "--timeout",
                    "10m",
                ),
                why=f"install Cilium {chart['version']} with Helm",
                timeout=900,
            )
        )
    for image in (ECHO_IMAGE, LOCUST_IMAGE):
        steps.append(
            Command(
                argv=("kind", "load", "docker-image", image, "--name", kind_name),
                why=f"load {image} into every node",
            )
        )
    steps += create_calls(spec, namespace_for(spec.name))
    return steps


def delete_step(name: str) -> Command:
    kind_name = kind_cluster_name(name)
    return Command(argv=("kind", "delete", "cluster", "--name", kind_name), why=f"delete {kind_name}")


class KindCluster(KubeCluster):
    """A balancebench namespace on a kind cluster balancebench created; ``down`` deletes the cluster."""

    provider_name = "kind"

    def __init__(self, name: str, api: KubeApi, *, dataplane: str, workdir: Path, keep: bool = False):
        super().__init__(name, api, dataplane=dataplane)
        self.workdir = workdir
        self.keep = keep

    def down(self) -> None:
        try:
            if not self.keep:
                _run(delete_step(self.name), self.workdir)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


class KindProvider:
    """kind clusters, one per dataplane of a run; ``--keep`` leaves them for debugging."""

    name = "kind"
    dataplanes = KIND_DATAPLANES
    """What ``dataplanes: all`` means on kind."""

    def __init__(self, options: ProviderOptions | None = None) -> None:
        self.options = options or ProviderOptions()

    def unavailable(self) -> str | None:
        problems = prerequisites(None)
        return problems[0] if problems else None

    def check(self, spec: ClusterSpec) -> None:
        check_cluster_name(spec.name)
        check_kube_spec(spec)
        kind_dataplane(spec.dataplane)
        problems = prerequisites(spec.dataplane)
        if problems:
            raise MissingFeature(f"--provider kind: {problems[0]}")

    def plan(self, spec: ClusterSpec) -> Plan:
        """What ``up`` would do, touching nothing; missing tools become notes, not errors."""
        check_cluster_name(spec.name)
        check_kube_spec(spec)
        notes = tuple(f"cannot run here yet: {problem}" for problem in prerequisites(spec.dataplane))
        return Plan(
            cluster=spec.name,
            provider=self.name,
            steps=tuple(create_steps(spec)),
            teardown=() if self.options.keep else (delete_step(spec.name),),
            notes=notes,
        )

    def up(self, spec: ClusterSpec, *, detach: bool = False) -> KindCluster:
        self.check(spec)
        workdir = Path(tempfile.mkdtemp(prefix=f"balancebench-kind-{spec.name}-"))
        created = False
        try:
            api_calls: list[ApiCall] = []
            for step in create_steps(spec):
                if isinstance(step, ApiCall):
                    api_calls.append(step)
                    continue
                created = created or (
                    isinstance(step, Command) and step.argv[:3] == ("kind", "create", "cluster")
                )
                _run(step, workdir)
            api = KubeApi.from_kubeconfig(str(workdir / "kubeconfig"), None)
            bring_up(api, spec, api_calls, timeout=READY_TIMEOUT)
        except BaseException:
            if created and not self.options.keep:
                # The original failure is what the user must see.
                with contextlib.suppress(BalancebenchError):
                    _run(delete_step(spec.name), workdir)
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return KindCluster(spec.name, api, dataplane=spec.dataplane, workdir=workdir, keep=self.options.keep)

    def get(self, name: str) -> KindCluster:
        check_cluster_name(name)
        if name not in self.list():
            raise InvalidInput(f"no kind cluster {kind_cluster_name(name)!r}: see 'kind get clusters'")
        workdir = Path(tempfile.mkdtemp(prefix=f"balancebench-kind-{name}-"))
        atexit.register(shutil.rmtree, workdir, ignore_errors=True)  # the kubeconfig lives as long as we do
        kubeconfig = workdir / "kubeconfig"
        done = shell.run(["kind", "get", "kubeconfig", "--name", kind_cluster_name(name)])
        kubeconfig.write_text(done.stdout)
        kubeconfig.chmod(0o600)
        api = KubeApi.from_kubeconfig(str(kubeconfig), None)
        # A cluster found again is not deleted by leaving a `with` block: only `down`/`delete` do that.
        return KindCluster(name, api, dataplane=_dataplane_of(api), workdir=workdir, keep=True)

    def list(self) -> list[str]:
        missing = KIND.problem(None)
        if missing is not None:
            raise MissingFeature(f"--provider kind: {missing}")
        done = shell.run(["kind", "get", "clusters"])
        prefix = kind_cluster_name("")
        return sorted(line.removeprefix(prefix) for line in done.stdout.split() if line.startswith(prefix))

    def leftovers(self) -> tuple[str, ...]:
        return ()  # everything it makes is found by list() (by name or label): nothing else to sweep

    def delete(self, name: str) -> bool:
        check_cluster_name(name)
        if name not in self.list():
            return False
        shell.run(delete_step(name).argv, timeout=300)
        return True


def _dataplane_of(api: KubeApi) -> str:
    from balancebench.clusters.existing import proxy_mode, proxy_mode_calls

    cilium, kube_proxy = (api.call(step) for step in proxy_mode_calls())
    return proxy_mode(cilium, kube_proxy)


def _run(step: Step, workdir: Path) -> None:
    """Carry out one command or config step of a plan inside ``workdir``."""
    if isinstance(step, Config):
        path = Path(step.path.replace(WORKDIR, str(workdir)))
        path.write_text(step.text())
        return
    if isinstance(step, Command):
        done = shell.run(step.resolved(str(workdir)), timeout=step.timeout)
        if step.stdout_to:
            Path(step.stdout_to.replace(WORKDIR, str(workdir))).write_text(done.stdout)
        return
    raise TypeError(f"not a command or config step: {step!r}")  # pragma: no cover


def _dotted(version: Sequence[int]) -> str:
    return ".".join(str(part) for part in version)
