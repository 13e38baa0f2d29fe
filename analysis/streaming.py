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

import os
from collections.abc import Sequence

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
    for batch, columns in zip(batches, iter_cell_columns(index, batches), strict=True):
        members = set(batch)
        part = run.model_copy(update={"cells": tuple(m for m in run.cells if m.cell in members)})
        for metrics in compute_run(part, columns):
            computed[metrics.cell] = metrics
        del columns
    return [computed[cell] for cell in order]


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
