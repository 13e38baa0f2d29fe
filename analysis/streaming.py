"""Every cell's metrics from a run directory, a batch of cells at a time: memory is a batch, not the run.

``compute_run(run, read_columns(run_dir))`` holds every record at once (~110 B each: 11 GB for 100 M).
:func:`stream_run` first reads only the ``cell`` column of each part file, groups the cells (run.json's
order, then cells only the records name) into batches of at most ``BATCH_ROWS`` records — a cell larger
than that is a batch of its own — and computes each batch from its own records, reading only the files
that hold them. Each cell sees exactly the rows, in the same order, that the in-memory path gives it, so
its metrics are the same (``tests/analysis/test_streaming.py`` checks the whole summary).

    >>> cells = stream_run(load_run(run_dir), run_dir)   # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pyarrow as pa

from analysis.loading import CellIndex, index_cells, iter_cell_columns
from analysis.manifest import Run
from analysis.metric_types import CellMetrics
from analysis.metrics import compute_run

BATCH_ROWS = 12_000_000
"""Records held in memory at once (≈ 1.3 GB of columns plus the metrics' working arrays)."""


def stream_run(
    run: Run, run_dir: str | os.PathLike[str], *, batch_rows: int = BATCH_ROWS
) -> list[CellMetrics]:
    """The metrics of every cell, in :func:`analysis.metrics.compute_run`'s order, a batch at a time."""
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    index = index_cells(run_dir)
    listed = [meta.cell for meta in run.cells]
    known = set(listed)
    order = listed + [cell for cell in index.cells if cell not in known and index.rows(cell)]
    batches = cell_batches(order, index, batch_rows)
    computed: dict[str, CellMetrics] = {}
    with reused_memory():
        for batch, columns in zip(batches, iter_cell_columns(index, batches), strict=True):
            members = set(batch)
            part = run.model_copy(update={"cells": tuple(m for m in run.cells if m.cell in members)})
            for metrics in compute_run(part, columns):
                computed[metrics.cell] = metrics
            del columns
    return [computed[cell] for cell in order]


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_GLIBC_TRIM_THRESHOLD, _GLIBC_MMAP_MAX = 128 * 1024, 65536
"""glibc's defaults (mallopt(3)), restored afterwards."""


@contextmanager
def reused_memory() -> Iterator[None]:
    """Inside, memory freed by one batch is kept for the next instead of going back to the kernel; on exit
    it is given back.

    Each batch allocates gigabytes of arrays. By default glibc maps every large array afresh (and Arrow's
    mimalloc decommits what it frees), so each batch faults all of its memory in again: at 100 M records
    that was 27 s of system time in a 61 s analysis (profiled on this 2-core VM); with the memory kept, 4 s.
    Inside, glibc serves large blocks from its heap (``M_MMAP_MAX`` 0) and keeps what is freed
    (``M_TRIM_THRESHOLD``), and Arrow reads through the system allocator. Elsewhere than glibc only the
    Arrow part applies."""
    libc = _glibc()
    previous_pool = pa.default_memory_pool()
    if libc is not None:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous_pool)
        if libc is not None:
            libc.mallopt(_M_MMAP_MAX, _GLIBC_MMAP_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_TRIM_THRESHOLD)
            libc.malloc_trim(0)


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
    except (OSError, AttributeError):
        return None
    return libc


def cell_batches(order: Sequence[str], index: CellIndex, batch_rows: int) -> list[list[str]]:
    """Consecutive cells grouped so that each group holds at most ``batch_rows`` records (or one cell)."""
    batches: list[list[str]] = []
    held = 0
    for cell in order:
        rows = index.rows(cell)
        if not batches or (held + rows > batch_rows and batches[-1]):
            batches.append([])
            held = 0
        batches[-1].append(cell)
        held += rows
    return batches
