"""The host-side keeper of a netns cluster: starts its sandbox, waits for it, removes its host traces.

``up`` starts ``python -m balancebench.clusters.netns.keeper --name N --lock-fd L -- <unshare argv>`` in a
session of its own. The keeper holds the cluster's name lock for its whole life (so the cluster "runs"
exactly while the keeper lives), runs the sandbox command (``unshare … --kill-child -- supervisor``) with
PR_SET_PDEATHSIG so the sandbox dies if the keeper is killed, and once the sandbox has ended — however it
ended, SIGKILL of the supervisor included — removes the cluster's cgroups and control socket, then exits
and so releases the lock. SIGTERM, SIGINT or SIGHUP make it kill the sandbox first.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

from balancebench.clusters.netns.runtime import (
    cluster_cgroup,
    lock_path,
    log_path,
    remove_cgroup_tree,
    socket_path,
)

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="balancebench.clusters.netns.keeper")
    parser.add_argument("--name", required=True)
    parser.add_argument("--lock-fd", type=int, required=True, help="fd holding the cluster's name lock")
    parser.add_argument("--pass-fd", type=int, action="append", default=[], help="fd to hand to the sandbox")
    parser.add_argument("sandbox", nargs=argparse.REMAINDER, help="-- then the sandbox command")
    args = parser.parse_args(argv)
    command = args.sandbox[1:] if args.sandbox[:1] == ["--"] else args.sandbox
    if not command:
        parser.error("no sandbox command after --")

    sandbox = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, pass_fds=args.pass_fd, preexec_fn=_die_with_parent
    )
    for fd in args.pass_fd:  # the sandbox alone holds them now: its owner sees EOF when it goes
        with contextlib.suppress(OSError):
            os.close(fd)

    def stop(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            sandbox.kill()  # unshare's --kill-child takes the supervisor, and with it the whole sandbox

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    status = sandbox.wait()

    errors = []
    cgroup = cluster_cgroup(args.name)
    if cgroup is not None:
        try:
            remove_cgroup_tree(cgroup, timeout=10.0)
        except OSError as exc:
            errors.append(f"could not remove {cgroup}: {exc}")
    with contextlib.suppress(FileNotFoundError):
        socket_path(args.name).unlink()
    # Still holding the lock: a concurrent `up` of the same name checks the inode it locked is the path's.
    with contextlib.suppress(FileNotFoundError):
        lock_path(args.name).unlink()
    for error in errors:
        print(f"keeper: {error}", file=sys.stderr)
    if status == 0 and not errors:
        with contextlib.suppress(FileNotFoundError):
            log_path(args.name).unlink()
    else:
        print(f"keeper: sandbox of cluster {args.name} ended with status {status}", file=sys.stderr)
    return 0 if status == 0 and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
