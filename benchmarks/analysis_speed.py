"""How long and how much memory `write_report` takes on 10 M records: goal ≤ 10 s and ≤ 4 GB on 2 cores.

Builds synthetic runs (9 cells: 3 dataplanes × kept-alive / max-requests / per-request, 6 target pods,
the per-request cells holding one connection per request — the worst case for connection counting), then
runs ``analysis.report.write_report`` in a fresh process per size, which reads the Parquet records, computes
every metric and writes summary.json, summary.md and report.html. Time and peak RSS are the child's own, so
generating the records does not count.

    $ .venv/bin/python benchmarks/analysis_speed.py                    # 1 M and 10 M rows
    $ .venv/bin/python benchmarks/analysis_speed.py --rows 2000000     # one size
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_SECONDS = 10.0
GOAL_PEAK_MB = 4096.0
GOAL_ROWS = 10_000_000

CHILD = """
import json, resource, sys, time
started = time.perf_counter()
from analysis.report import write_report
files = write_report(sys.argv[1])
seconds = time.perf_counter() - started
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "html_bytes": files.report_html.stat().st_size,
                  "cells": len(files.summary["cells"])}))
"""


def measure(rows: int, workdir: Path, parts_per_cell: int) -> dict[str, float]:
    """Write a synthetic run of ``rows`` records, then time write_report on it in a fresh interpreter."""
    from analysis.synthetic import write_synthetic_run

    run_dir = workdir / f"run-{rows}"
    started = time.perf_counter()
    write_synthetic_run(run_dir, rows=rows, parts_per_cell=parts_per_cell)
    generated = time.perf_counter() - started
    parquet_mb = sum(p.stat().st_size for p in (run_dir / "records").glob("*.parquet")) / 2**20
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(run_dir)], capture_output=True, text=True, check=True, timeout=600
    )
    result: dict[str, float] = json.loads(child.stdout.strip().splitlines()[-1])
    shutil.rmtree(run_dir)
    return {**result, "rows": rows, "generated_s": generated, "parquet_mb": parquet_mb}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, action="append", help="record count (repeatable; default 1M and 10M)"
    )
    parser.add_argument("--parts-per-cell", type=int, default=4, help="Parquet files per cell (default 4)")
    args = parser.parse_args()
    sizes = args.rows or [1_000_000, GOAL_ROWS]
    results = []
    with tempfile.TemporaryDirectory(prefix="balancebench-analysis-speed-") as workdir:
        for rows in sizes:
            results.append(measure(rows, Path(workdir), args.parts_per_cell))
    header = (
        f"{'rows':>11}  {'parquet MB':>10}  {'seconds':>8}  {'peak RSS MB':>11}  {'report KB':>9}  "
        f"{'time/goal':>9}  {'memory/goal':>11}"
    )
    print(
        "write_report: read records + all metrics + summary.json/.md + report.html "
        f"(goal at {GOAL_ROWS:,} rows: <= {GOAL_SECONDS:g} s, <= {GOAL_PEAK_MB / 1024:g} GB)"
    )
    print(header)
    print("-" * len(header))
    for result in results:
        print(
            f"{int(result['rows']):>11,}  {result['parquet_mb']:>10.0f}  {result['seconds']:>8.2f}  "
            f"{result['peak_mb']:>11.0f}  {result['html_bytes'] / 1024:>9.0f}  "
            f"{result['seconds'] / GOAL_SECONDS:>9.2f}  {result['peak_mb'] / GOAL_PEAK_MB:>11.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
