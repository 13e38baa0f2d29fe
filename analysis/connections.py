"""A cell's server connections, numbered once: the metrics and the explain section share them.

A server connection is a distinct ``(target pod, server_conn)`` pair among the answered rows. They are
numbered in ``(target pod, server_conn)`` order, so the numbering does not depend on the order of the rows.
Numbering is a bitmap over the ids' range when they are counters (what the echo pods give, O(rows)), a
sorted factorization otherwise. At 100 M records the explain section used to sort every cell's rows again
(``np.unique``): 13.8 s of 71 s (profiled), now shared with the connection metrics.

    >>> conns = server_connections(source=s, target=t, server_conn=c, started=t0, ended=t1)  # doctest: +SKIP
    >>> conns.count                                                                         # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class ServerConnections:
    """Each server connection of a cell: its pod, the source pod that opened it, what it carried, when."""

    target: Ints
    """Target pod index of each connection."""
    source: Ints
    """Source pod index of each connection (-1: unknown); a server connection has one client."""
    requests: Ints
    """Answered requests each connection carried."""
    first: Floats
    """First send on each connection (seconds, the records' clock)."""
    last: Floats
    """Last response on each connection."""

    @property
    def count(self) -> int:
        return int(self.target.size)


def server_connections(
    *,
    source: npt.ArrayLike,
    target: npt.ArrayLike,
    server_conn: npt.ArrayLike,
    started: npt.ArrayLike,
    ended: npt.ArrayLike,
) -> ServerConnections:
    """The server connections of rows (one entry per row in each array; rows with no pod or no server
    connection id, ``-1``, are left out). ``started``/``ended``: each request's send and response times."""
    tgt = np.asarray(target, dtype=np.int64)
    conn = np.asarray(server_conn, dtype=np.int64)
    src = np.asarray(source, dtype=np.int64)
    t0 = np.asarray(started, dtype=np.float64)
    t1 = np.asarray(ended, dtype=np.float64)
    keep = (tgt >= 0) & (conn >= 0)
    if not keep.all():
        src, tgt, conn, t0, t1 = src[keep], tgt[keep], conn[keep], t0[keep], t1[keep]
    of_row, n, conn_target = dense_ids(tgt, conn)
    first = np.full(n, np.inf)
    last = np.full(n, -np.inf)
    np.minimum.at(first, of_row, t0)
    np.maximum.at(last, of_row, t1)
    conn_source = np.full(n, -1, np.int64)
    conn_source[of_row] = src
    return ServerConnections(
        target=conn_target,
        source=conn_source,
        requests=np.bincount(of_row, minlength=n).astype(np.int64),
        first=first,
        last=last,
    )


def dense_ids(groups: npt.NDArray[Any], ids: npt.NDArray[Any]) -> tuple[Ints, int, Ints]:
    """Number the distinct (group, id) pairs 0..k-1 in (group, id) order: each row's number, k, and each
    pair's group. Groups are non-negative.

    Connection ids are counters in practice, so a dense bitmap over their range is O(rows); ids spread too
    widely for that fall back to a sorted factorization.
    """
    if ids.size == 0:
        return np.empty(0, np.int64), 0, np.empty(0, np.int64)
    low = int(ids.min())
    span = int(ids.max()) - low + 1
    n_groups = int(groups.max()) + 1
    if n_groups * span <= max(4 * ids.size, 1 << 20):
        keys = groups.astype(np.int64) * span + (ids.astype(np.int64) - low)
        present = np.bincount(keys, minlength=n_groups * span) > 0
        rank = np.cumsum(present) - 1
        return rank[keys], int(present.sum()), np.flatnonzero(present) // span
    id_codes, unique_ids = pd.factorize(ids, sort=True)
    pair_codes, unique_pairs = pd.factorize(groups.astype(np.int64) * len(unique_ids) + id_codes, sort=True)
    return pair_codes.astype(np.int64), len(unique_pairs), (unique_pairs // len(unique_ids)).astype(np.int64)
