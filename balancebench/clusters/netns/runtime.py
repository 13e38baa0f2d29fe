"""Where a netns cluster's host-side traces live, and how they are found again and garbage-collected.

A cluster leaves only these objects outside its sandbox, all named after the cluster:

    RUNTIME_DIR/<name>.lock   held (flock) by the cluster's keeper for as long as any part of it lives
    RUNTIME_DIR/<name>.sock   the supervisor's control socket
    RUNTIME_DIR/<name>.log    keeper and supervisor log; kept after an abnormal end, for the post-mortem
    <cgroup2>/balancebench-<tag>.<name>[/<pod>]
                              ebpf dataplane only: connect4 is attached to the cluster's cgroup, and
                              every pod process lives in its pod's; <tag> names the runtime directory

State is discovered, not stored: a cluster runs exactly when its lock is held, so a crash (even SIGKILL of
every process) never leaves something ``list`` cannot see, and ``collect_garbage`` removes what a dead
cluster left behind. Every one of these paths comes from :func:`balancebench.names.own_path` with a checked
cluster name, so no name (``../x``, ``/etc/passwd``) reaches a file outside these directories.

>>> running_names()
['dev']
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from balancebench.errors import InvalidInput
from balancebench.names import CLUSTER_NAME, check_cluster_name, own_path

CGROUP_PREFIX = "balancebench-"
LABEL = "BALANCEBENCH_CLUSTER"
"""Environment variable naming the cluster, set on every process of it (kind labels its containers so)."""
SUPERVISOR_MODULE = "balancebench.clusters.netns.supervisor"
KEEPER_MODULE = "balancebench.clusters.netns.keeper"


RUNTIME_DIR_ENV = "BALANCEBENCH_RUNTIME_DIR"
"""Overrides the runtime directory: the test suite gives each session its own, so sessions never meet."""


def runtime_dir() -> Path:
    """The per-user directory for locks, sockets and logs (created on first use, mode 0700)."""
    path = _runtime_dir_path()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _runtime_dir_path() -> Path:
    if os.environ.get(RUNTIME_DIR_ENV):
        path = Path(os.environ[RUNTIME_DIR_ENV])
    elif os.geteuid() == 0:
        path = Path("/run/balancebench")
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "balancebench"
    else:
        path = Path(f"/tmp/balancebench-{os.getuid()}")
    return path


def _cgroup_prefix() -> str:
    """``balancebench-<tag>.``: cgroups are machine-wide, runtime directories are not, so a cluster's cgroup
    names its runtime directory; garbage collection then never takes another directory's (a user's, another
    test session's) live cluster for a dead one of its own."""
    tag = hashlib.sha256(str(_runtime_dir_path()).encode()).hexdigest()[:6]
    return f"{CGROUP_PREFIX}{tag}."  # the dot: no cluster name has one, so older sweeps skip these too


def lock_path(name: str) -> Path:
    return _own_file(name, ".lock")


def socket_path(name: str) -> Path:
    return _own_file(name, ".sock")


def log_path(name: str) -> Path:
    return _own_file(name, ".log")


def _own_file(name: str, suffix: str) -> Path:
    """A cluster's file: only ever a plain file directly inside the runtime directory (names are checked)."""
    return own_path(runtime_dir(), check_cluster_name(name) + suffix)


def _is_cluster_name(name: str) -> bool:
    return CLUSTER_NAME.fullmatch(name) is not None


def cgroup2_root() -> Path | None:
    """The cgroup v2 mount point (``/sys/fs/cgroup`` or, on hybrid hosts, ``/sys/fs/cgroup/unified``)."""
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return Path(fields[1])
    return None


def cluster_cgroup(name: str) -> Path | None:
    root = cgroup2_root()
    return own_path(root, _cgroup_prefix() + check_cluster_name(name)) if root is not None else None


def claim(name: str) -> int:
    """Take the cluster name: return an fd holding its lock, or raise InvalidInput if a cluster has it."""
    path = lock_path(name)
    for _attempt in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            # A concurrent `is_running` probe holds a shared lock for an instant; only a lock that stays
            # held means a live cluster.
            time.sleep(0.02)
            continue
        # Garbage collection may have unlinked the file we opened; a lock on an orphaned inode claims nothing.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
    raise InvalidInput(
        f"a cluster named {name!r} already exists: pick another --name, or remove it with "
        f"'balancebench cluster down {name}'"
    )


def is_running(name: str) -> bool:
    """True while any process of the cluster (its keeper) holds the name's lock."""
    try:
        fd = os.open(lock_path(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def running_names() -> list[str]:
    return sorted(
        p.stem for p in runtime_dir().glob("*.lock") if _is_cluster_name(p.stem) and is_running(p.stem)
    )


def leftover_names() -> list[str]:
    """Clusters that no longer run but left a lock, socket or log in the runtime directory (a crash, or a
    log kept for the post-mortem); ``collect_garbage`` clears their cgroups too."""
    found = {
        path.stem
        for pattern in ("*.lock", "*.sock", "*.log")
        for path in runtime_dir().glob(pattern)
        if _is_cluster_name(path.stem)
    }
    return sorted(name for name in found if not is_running(name))


def wait_stopped(name: str, timeout: float) -> bool:
    """Wait until the cluster's keeper has released its lock (everything removed); False on timeout."""
    deadline = time.monotonic() + timeout
    while is_running(name):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def remove_cgroup_tree(path: Path, *, timeout: float = 5.0) -> None:
    """Remove a cgroup directory and its children, killing anything still inside; retry while busy."""
    if not path.is_dir():
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            _remove_cgroup_once(path)
            return
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _remove_cgroup_once(path: Path) -> None:
    children = sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    for cgroup in [*children, path]:
        with contextlib.suppress(FileNotFoundError):
            for pid in (cgroup / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        detach_programs(cgroup)
        with contextlib.suppress(FileNotFoundError):
            cgroup.rmdir()


def detach_programs(cgroup: Path) -> None:
    """Detach every BPF program from ``cgroup``.

    A removed cgroup only releases its programs once the kernel frees it, and sockets created in it keep
    it (a connection to a pod that died retransmits for minutes): detaching frees them now.
    """
    if shutil.which("bpftool") is None or not cgroup.is_dir():
        return
    shown = subprocess.run(
        ["bpftool", "--json", "cgroup", "show", str(cgroup)], capture_output=True, text=True
    )
    if shown.returncode != 0 or not shown.stdout.strip():
        return
    for program in json.loads(shown.stdout):
        detach = [
            "bpftool",
            "cgroup",
            "detach",
            str(cgroup),
            program["attach_type"],
            "id",
            str(program["id"]),
        ]
        subprocess.run(detach, capture_output=True)


def find_supervisor_pid(name: str) -> int | None:
    """The host PID of the cluster's supervisor (PID 1 of its sandbox), found by its command line."""
    uid = os.getuid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if _is_supervisor_of(argv, name):
            return int(entry.name)
    return None


def _is_supervisor_of(argv: list[bytes], name: str) -> bool:
    # `unshare … -- python -m supervisor` carries the same words; only the python process starts with them.
    return (
        len(argv) > 4
        and argv[1:3] == [b"-m", SUPERVISOR_MODULE.encode()]
        and argv[3:5] == [b"--name", name.encode()]
    )


def collect_garbage() -> list[str]:
    """Remove what dead clusters left behind (sockets, locks, cgroups); return the names cleaned."""
    cleaned: set[str] = set()
    directory = runtime_dir()
    for lock in directory.glob("*.lock"):
        name = lock.stem
        if not _is_cluster_name(name):
            continue  # not a cluster's: leave it alone
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            with contextlib.suppress(FileNotFoundError):
                socket_path(name).unlink()
                cleaned.add(name)
            cgroup = cluster_cgroup(name)
            if cgroup is not None and cgroup.exists():
                remove_cgroup_tree(cgroup)
                cleaned.add(name)
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
        finally:
            os.close(fd)
    root = cgroup2_root()
    if root is not None and os.geteuid() == 0:
        prefix = _cgroup_prefix()
        for cgroup in root.glob(f"{prefix}*"):
            name = cgroup.name.removeprefix(prefix)
            if _is_cluster_name(name) and not is_running(name):
                remove_cgroup_tree(cgroup)
                cleaned.add(name)
    return sorted(cleaned)
