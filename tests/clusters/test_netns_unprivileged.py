"""Without root: the netns cluster works through a user namespace, or says exactly what is missing.

An unprivileged user is simulated from root with ``unshare --user --map-user=1000``: the test process
then has uid 1000 and no capability on the host, as a real user would. A host that forbids user
namespaces is simulated by lowering ``user.max_user_namespaces`` inside an outer user namespace.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.clusters.conftest import CLIENT, SERVICE_URL, unique_name

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="simulating an unprivileged user needs root (as a user, every test is one)"
    ),
]

AS_USER = ["unshare", "--user", "--map-user=1000", "--map-group=1000", "--"]
USER_ENV = {  # a user's own runtime dir, not the session's (root's, mode 0700)
    k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "BALANCEBENCH_RUNTIME_DIR")
}

SCRIPT = textwrap.dedent(
    """
    import os, subprocess, sys
    from balancebench.clusters.base import ClusterSpec
    from balancebench.clusters.netns import NetnsProvider
    assert os.geteuid() != 0
    spec = ClusterSpec(name=sys.argv[1], nodes=2, targets=2, sources=1, dataplane="iptables")
    with NetnsProvider().up(spec) as cluster:
        client = cluster.exec("source-0", [sys.executable, sys.argv[2], sys.argv[3]],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        out, _ = client.communicate(b"new 40\\n", timeout=60)
        print(" ".join(sorted({line.split()[0] for line in out.decode().splitlines() if line != "done"})))
    """
)


def test_a_user_builds_a_cluster_through_a_user_namespace() -> None:
    done = subprocess.run(
        [*AS_USER, sys.executable, "-c", SCRIPT, unique_name("user"), str(CLIENT), SERVICE_URL],
        capture_output=True,
        text=True,
        timeout=120,
        env=USER_ENV,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["echo-0", "echo-1"]


def test_a_user_without_user_namespaces_is_told_what_is_missing() -> None:
    forbid = "echo 1 > /proc/sys/user/max_user_namespaces && exec " + " ".join(AS_USER) + ' "$@"'
    up = [sys.executable, "-m", "balancebench", "cluster", "up", "--name", unique_name("nouserns")]
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--", "sh", "-c", forbid, "sh", *up],
        capture_output=True,
        text=True,
        timeout=60,
        env=USER_ENV,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1, done.stderr
    assert "needs root or unprivileged user namespaces" in done.stderr
    assert "No space left on device" in done.stderr  # unshare's own reason, quoted
