"""Step into a pod and become the program: the last hop of ``cluster exec``.

``NetnsCluster.exec`` runs ``nsenter --target <supervisor> --mount --net --pid -- python -m
balancebench.clusters.netns.podexec --netns /run/netns/POD [--cgroup DIR] [--cwd DIR] -- ARGV…``. Inside
the sandbox this joins the pod's cgroup (where the ebpf dataplane's connect4 program is attached), goes
back to the caller's working directory, and execs ``nsenter --net=<pod netns> -- ARGV`` — so the program
runs in the pod's network with stdin, stdout, stderr and exit code passed straight through.

For a User-Mode Linux node (``--agent IP:PORT`` instead of ``--netns``) the command runs inside the node's
kernel through its agent: no stdin, its output and exit code relayed once it ends (``cluster exec node-0
-- ipvsadm -Ln``).

The program gets SIGTERM when the host-side ``nsenter`` that started it dies (PR_SET_PDEATHSIG survives
the execs), so killing the process ``exec`` returned — or its caller dying — ends the program too,
instead of leaving it running in the pod until the cluster goes down.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1


def main(argv: Sequence[str] | None = None) -> int:
    parent = os.getppid()
    parser = argparse.ArgumentParser(prog="balancebench.clusters.netns.podexec")
    parser.add_argument("--netns")
    parser.add_argument("--agent", help="IP:PORT of a UML node's agent")
    parser.add_argument("--cgroup")
    parser.add_argument("--cwd")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command after --")
    if args.agent:
        return _relay(args.agent, command)
    if not args.netns:
        parser.error("give --netns or --agent")
    _die_with_parent(parent)
    if args.cgroup:
        with open(os.path.join(args.cgroup, "cgroup.procs"), "w") as procs:
            procs.write("0")
    if args.cwd:
        try:
            os.chdir(args.cwd)
        except OSError:
            os.chdir("/")  # e.g. a directory under /run, which the sandbox has its own tmpfs on
    os.execvp("nsenter", ["nsenter", f"--net={args.netns}", "--", *command])
    return 127  # not reached: execvp only returns by raising


def _relay(agent: str, command: Sequence[str]) -> int:
    from balancebench.clusters.netns.kernels.uml_agent import call

    try:
        reply = call(agent, {"argv": list(command), "input": None})
    except (OSError, ValueError) as exc:
        print(f"the node's agent at {agent} does not answer: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(reply["stdout"])
    sys.stderr.write(reply["stderr"])
    return int(reply["rc"])


def _die_with_parent(parent: int) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the signal was armed
        sys.exit(128 + signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main())
