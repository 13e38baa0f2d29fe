"""Read a run's per-request records into one compact DataFrame (strings as categoricals), and write them.

Ten million records stay well under a gigabyte this way: every string column (cell, pods, nodes, error
kind) is read dictionary-encoded straight from Parquet, so it becomes a pandas categorical with small
integer codes that the metrics group with ``np.bincount``.

    >>> frame = read_records("results/seed-20261124")   # doctest: +SKIP
    >>> frame["target_pod"].value_counts()               # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.errors import AnalysisError
from analysis.manifest import run_path
from analysis.records import COLUMNS, RECORD_SCHEMA, RECORDS_DIR

STRING_COLUMNS: tuple[str, ...] = tuple(f.name for f in RECORD_SCHEMA if pa.types.is_string(f.type))


def record_files(run_dir: str | os.PathLike[str]) -> list[Path]:
    """The Parquet part files of a run, in name order; hidden files (writers' temporaries) are skipped."""
    directory = run_path(run_dir) / RECORDS_DIR
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.parquet") if not p.name.startswith("."))


def read_records(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """All records of a run as one DataFrame with categorical string columns; empty (typed) when none."""
    tables = [_read_part(path) for path in record_files(run_dir)]
    if not tables:
        return empty_records()
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    del tables
    # Part files carry different dictionaries; unify once so pandas gets one set of categories per column.
    table = table.unify_dictionaries()
    return table.to_pandas(self_destruct=True, split_blocks=True)


def empty_records() -> pd.DataFrame:
    """A records frame with no rows and the schema's columns and types."""
    return normalize_records(RECORD_SCHEMA.empty_table().to_pandas())


def normalize_records(frame: pd.DataFrame) -> pd.DataFrame:
    """Check a hand-built or loaded frame has the schema's columns and give it the types metrics expect.

    String columns become categoricals (a no-op when they already are), numbers the schema's dtypes.
    """
    missing = [column for column in COLUMNS if column not in frame.columns]
    if missing:
        raise AnalysisError(
            f"records lack column(s) {', '.join(missing)}: write them with the schema in analysis/records.py"
        )
    converted: dict[str, pd.Series] = {}
    for field in RECORD_SCHEMA:
        column = frame[field.name]
        if field.name in STRING_COLUMNS:
            if not isinstance(column.dtype, pd.CategoricalDtype):
                column = column.astype(str).astype("category")
        else:
            dtype = field.type.to_pandas_dtype()
            if column.dtype != dtype:
                try:
                    column = column.astype(dtype)
                except (TypeError, ValueError) as exc:
                    raise AnalysisError(
                        f"records column {field.name} holds values that are not {field.type}: {exc}"
                    ) from exc
        converted[field.name] = column
    return pd.DataFrame(converted, copy=False)


def write_records(path: str | os.PathLike[str], frame: pd.DataFrame) -> Path:
    """Write records to one Parquet file with the record schema (tests, synthetic runs, converters)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame.loc[:, list(COLUMNS)], preserve_index=False)
    # Categoricals arrive as dictionary columns: store plain strings, exactly the schema the writers use.
    table = table.cast(RECORD_SCHEMA)
    pq.write_table(table, target, compression="zstd")
    return target


def _read_part(path: Path) -> pa.Table:
    try:
        schema = pq.read_schema(path)
        missing = [column for column in COLUMNS if column not in schema.names]
        if missing:
            raise AnalysisError(
                f"records file {path} lacks column(s) {', '.join(missing)}: "
                "it was not written with the schema in analysis/records.py"
            )
        table = pq.read_table(path, columns=list(COLUMNS), read_dictionary=list(STRING_COLUMNS))
    except (OSError, pa.ArrowException) as exc:
        raise AnalysisError(
            f"records file {path} is not readable Parquet ({exc}): move it out of records/ or re-run"
        ) from exc
    numeric_target = pa.schema(
        [
            pa.field(f.name, pa.dictionary(pa.int32(), pa.string()) if f.name in STRING_COLUMNS else f.type)
            for f in RECORD_SCHEMA
        ]
    )
    if table.schema.remove_metadata() != numeric_target:
        try:
            table = table.cast(numeric_target)
        except (pa.ArrowException, ValueError) as exc:
            raise AnalysisError(f"records file {path} has columns of the wrong type: {exc}") from exc
    return table
