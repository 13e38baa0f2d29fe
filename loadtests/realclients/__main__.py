"""Build the real client drivers: ``python -m loadtests.realclients build [NAME ...]`` (scripts/setup.sh).

Builds each named client (default: all) whose toolchain is present and whose program is older than its
source; says what it builds, and skips a client whose toolchain is missing with the line saying how to get it.
Exit 2 when a named client cannot be built.
"""

from __future__ import annotations

import sys

from loadtests.policy import PolicyError
from loadtests.realclients import REAL_CLIENTS


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "build":
        sys.stderr.write("usage: python -m loadtests.realclients build [NAME ...]\n")
        return 2
    names = argv[1:] or list(REAL_CLIENTS)
    unknown = [name for name in names if name not in REAL_CLIENTS]
    if unknown:
        sys.stderr.write(f"unknown real client {unknown[0]!r}: choose from {', '.join(REAL_CLIENTS)}\n")
        return 2
    code = 0
    for name in names:
        client = REAL_CLIENTS[name]
        if not client.stale():
            continue
        missing = client.toolchain_missing()
        if missing is not None:
            sys.stderr.write(f"setup: skipping {missing}\n")
            code = 2 if argv[1:] else code
            continue
        print(f"setup: building the {name} driver ({client.library})")
        try:
            client.build()
        except PolicyError as exc:
            sys.stderr.write(f"setup: {exc}\n")
            code = 2
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
