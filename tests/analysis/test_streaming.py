"""The streaming path (a batch of cells at a time) gives exactly the summary of the in-memory path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.loading import index_cells, read_columns, read_records, write_records
from analysis.manifest import load_run
from analysis.metrics import compute_run
from analysis.records import RECORDS_DIR
from analysis.streaming import cell_batches, stream_run
from analysis.summary import build_summary
from analysis.synthetic import DEFAULT_CELLS, write_synthetic_run


def test_streaming_in_batches_gives_the_in_memory_summary(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_synthetic_run(run_dir, rows=27_000, cells=DEFAULT_CELLS, parts_per_cell=2)
    # One more part file mixing a listed cell's rows with a cell run.json does not list: filtered per batch.
    frame = read_records(run_dir)
    extra = frame[frame["cell"] == "iptables/keepalive"].head(500).copy()
    unlisted = extra.copy()
    unlisted["cell"] = "unlisted/cell"
    mixed = pd.concat([unlisted, extra]).sample(frac=1.0, random_state=np.random.RandomState(3))
    write_records(run_dir / RECORDS_DIR / "zz-mixed.parquet", mixed)
    run = load_run(run_dir)

    index = index_cells(run_dir)
    assert index.rows("iptables/keepalive") == 3_000 + 500
    assert index.rows("unlisted/cell") == 500
    batches = cell_batches([*[meta.cell for meta in run.cells], "unlisted/cell"], index, 7_000)
    assert [len(batch) for batch in batches] == [2, 2, 2, 2, 2]  # 3,000-3,500 rows per cell

    in_memory = build_summary(run, compute_run(run, read_columns(run_dir)))
    for batch_rows in (1, 7_000, 10**9):  # a cell per batch, a few cells per batch, one batch
        streamed = stream_run(run, run_dir, batch_rows=batch_rows)
        assert [cell.cell for cell in streamed][-1] == "unlisted/cell"
        assert build_summary(run, streamed) == in_memory
    counts = {entry["cell"]: entry["requests"] + entry["warmup_excluded"] for entry in in_memory["cells"]}
    assert counts["iptables/keepalive"] == 3_500 and counts["unlisted/cell"] == 500
