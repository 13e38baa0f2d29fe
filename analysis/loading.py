"""Read a run's per-request records into compact columns (strings as integer codes), and write them.

Two shapes: :func:`read_columns` streams the Parquet part files one at a time into preallocated numpy
arrays (one copy of the data in memory, string columns as int32 codes into a list of names) — the path
``write_report`` takes for millions of rows; :func:`read_records` gives the same records as a pandas
DataFrame with categorical string columns, for exploring a run by hand.

    >>> columns = read_columns("results/seed-20261124")   # doctest: +SKIP
    >>> frame = read_records("results/seed-20261124")     # doctest: +SKIP
    >>> frame["target_pod"].value_counts()                 # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.errors import AnalysisError
from analysis.manifest import run_path
from analysis.records import COLUMNS, LATER_COLUMNS, RECORD_SCHEMA, RECORDS_DIR

STRING_COLUMNS: tuple[str, ...] = tuple(f.name for f in RECORD_SCHEMA if pa.types.is_string(f.type))
NUMBER_DTYPES: dict[str, np.dtype[Any]] = {
    f.name: np.dtype(f.type.to_pandas_dtype()) for f in RECORD_SCHEMA if f.name not in STRING_COLUMNS
}


@dataclass(frozen=True, eq=False)
class RecordColumns:
    """Records as numpy arrays: each string column as int32 codes into its list of names (-1: missing)."""

    size: int
    codes: Mapping[str, npt.NDArray[np.int32]]
    names: Mapping[str, list[str]]
    numbers: Mapping[str, npt.NDArray[Any]]

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> RecordColumns:
        """Columns of a DataFrame with the record schema's columns (plain or categorical strings)."""
        typed = normalize_records(frame)
        return cls(
            size=len(typed),
            codes={name: typed[name].cat.codes.to_numpy().astype(np.int32) for name in STRING_COLUMNS},
            names={name: [str(c) for c in typed[name].cat.categories] for name in STRING_COLUMNS},
            numbers={name: typed[name].to_numpy(dtype) for name, dtype in NUMBER_DTYPES.items()},
        )

    @classmethod
    def from_table(cls, table: pa.Table) -> RecordColumns:
        """Columns of an Arrow table with the record schema's columns."""
        builder = _Builder(table.num_rows)
        builder.add(table, source="records table")
        return builder.finish()


def record_files(run_dir: str | os.PathLike[str]) -> list[Path]:
    """The Parquet part files of a run, in name order; hidden files (writers' temporaries) are skipped."""
    directory = run_path(run_dir) / RECORDS_DIR
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.parquet") if not p.name.startswith("."))


def read_columns(run_dir: str | os.PathLike[str]) -> RecordColumns:
    """All records of a run as :class:`RecordColumns`, reading one part file at a time into final arrays."""
    files = record_files(run_dir)
    sizes = [_row_count(path) for path in files]
    builder = _Builder(sum(sizes))
    for path, size in zip(files, sizes, strict=True):
        table = _read_part(path)
        if table.num_rows != size:
            raise AnalysisError(f"records file {path} changed while it was read: re-run the report")
        builder.add(table, source=f"records file {path}")
        del table
    return builder.finish()


@dataclass(frozen=True)
class CellIndex:
    """Which part files hold which cells, and how many rows: read from the ``cell`` column alone."""

    files: tuple[Path, ...]
    counts: tuple[Mapping[str, int], ...]
    """Rows per cell id, one mapping per file."""
    cells: tuple[str, ...]
    """Every cell id the records name, in order of first appearance (as :func:`read_columns` names them)."""

    def rows(self, cell_id: str) -> int:
        return sum(counts.get(cell_id, 0) for counts in self.counts)


def index_cells(run_dir: str | os.PathLike[str]) -> CellIndex:
    """Rows per cell per part file, reading only the dictionary-encoded ``cell`` column (cheap)."""
    files = record_files(run_dir)
    counts: list[dict[str, int]] = []
    seen: dict[str, None] = {}
    for path in files:
        try:
            column = pq.read_table(path, columns=["cell"], read_dictionary=["cell"]).column("cell")
        except (OSError, pa.ArrowException, KeyError) as exc:
            raise AnalysisError(
                f"records file {path} is not readable Parquet ({exc}): move it out of records/ or re-run"
            ) from exc
        mine: dict[str, int] = {}
        for chunk in column.chunks:
            encoded = chunk if isinstance(chunk, pa.DictionaryArray) else chunk.dictionary_encode()
            names = [str(v) for v in encoded.dictionary.to_pylist()]
            indices = encoded.indices.drop_null().to_numpy(zero_copy_only=False)
            for name, count in zip(names, np.bincount(indices, minlength=len(names)), strict=True):
                seen.setdefault(name, None)
                if count:
                    mine[name] = mine.get(name, 0) + int(count)
        counts.append(mine)
    return CellIndex(files=tuple(files), counts=tuple(counts), cells=tuple(seen))


def iter_cell_columns(index: CellIndex, batches: Sequence[Sequence[str]]) -> Iterator[RecordColumns]:
    """For each batch of cell ids, the records of just those cells as :class:`RecordColumns`.

    Only the part files holding a batch's cells are read (a file holding other cells too is filtered), one
    at a time into the batch's final arrays: memory is one batch's rows, not the run's."""
    for batch in batches:
        wanted = set(batch)
        sizes = [sum(n for cell, n in counts.items() if cell in wanted) for counts in index.counts]
        builder = _Builder(sum(sizes))
        for path, size in zip(index.files, sizes, strict=True):
            if not size:
                continue
            table = _read_part(path)
            if size != table.num_rows:
                table = table.filter(_cells_mask(table.column("cell"), wanted))
            if table.num_rows != size:
                raise AnalysisError(f"records file {path} changed while it was read: re-run the report")
            builder.add(table, source=f"records file {path}")
            del table
        yield builder.finish()


def _cells_mask(column: pa.ChunkedArray, wanted: set[str]) -> pa.ChunkedArray:
    chunks = []
    for chunk in column.chunks:
        encoded = chunk if isinstance(chunk, pa.DictionaryArray) else chunk.dictionary_encode()
        keep = np.array([str(v) in wanted for v in encoded.dictionary.to_pylist()] + [False])
        indices = encoded.indices.fill_null(len(encoded.dictionary)).to_numpy(zero_copy_only=False)
        chunks.append(pa.array(keep[indices]))
    return pa.chunked_array(chunks, type=pa.bool_())


def read_records(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """All records of a run as one DataFrame with categorical string columns; empty (typed) when none."""
    columns = read_columns(run_dir)
    data: dict[str, Any] = {
        name: pd.Categorical.from_codes(columns.codes[name], categories=pd.Index(columns.names[name]))
        for name in STRING_COLUMNS
    }
    data.update(columns.numbers)
    return pd.DataFrame({name: data[name] for name in COLUMNS})


def empty_records() -> pd.DataFrame:
    """A records frame with no rows and the schema's columns and types."""
    return normalize_records(RECORD_SCHEMA.empty_table().to_pandas())


def normalize_records(frame: pd.DataFrame) -> pd.DataFrame:
    """Check a hand-built or loaded frame has the schema's columns and give it the types metrics expect.

    String columns become categoricals (a no-op when they already are), numbers the schema's dtypes.
    """
    later: dict[str, Any] = {
        name: value for name, value in LATER_COLUMNS.items() if name not in frame.columns
    }
    if later:
        frame = frame.assign(**later)
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
            dtype = NUMBER_DTYPES[field.name]
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
    later: dict[str, Any] = {
        name: value for name, value in LATER_COLUMNS.items() if name not in frame.columns
    }
    if later:
        frame = frame.assign(**later)
    table = pa.Table.from_pandas(frame.loc[:, list(COLUMNS)], preserve_index=False)
    # Categoricals arrive as dictionary columns: store plain strings, exactly the schema the writers use.
    table = table.cast(RECORD_SCHEMA)
    pq.write_table(table, target, compression="zstd")
    return target


class _Builder:
    """Fills preallocated arrays table by table: the data is copied once, straight to its final place."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.position = 0
        self.numbers = {name: np.empty(size, dtype) for name, dtype in NUMBER_DTYPES.items()}
        self.codes = {name: np.empty(size, np.int32) for name in STRING_COLUMNS}
        self.names: dict[str, dict[str, int]] = {name: {} for name in STRING_COLUMNS}

    def add(self, table: pa.Table, *, source: str) -> None:
        table = with_later_columns(table)
        missing = [name for name in COLUMNS if name not in table.column_names]
        if missing:
            raise AnalysisError(f"{source} lacks column(s) {', '.join(missing)}")
        start, stop = self.position, self.position + table.num_rows
        for name, out in self.numbers.items():
            try:
                self._fill(out[start:stop], table.column(name), _numbers)
            except (TypeError, ValueError, pa.ArrowException) as exc:
                raise AnalysisError(f"{source}: column {name} cannot be read as {out.dtype}: {exc}") from exc
        for name, out in self.codes.items():
            self._fill(out[start:stop], table.column(name), partial(_codes, names=self.names[name]))
        self.position = stop

    @staticmethod
    def _fill(
        out: npt.NDArray[Any], column: pa.ChunkedArray, write: Callable[[pa.Array, npt.NDArray[Any]], None]
    ) -> None:
        """``write(chunk, its part of out)`` for each chunk of ``column``, in order."""
        offset = 0
        for chunk in column.chunks:
            write(chunk, out[offset : offset + len(chunk)])
            offset += len(chunk)

    def finish(self) -> RecordColumns:
        return RecordColumns(
            size=self.size,
            codes=self.codes,
            names={name: list(names) for name, names in self.names.items()},
            numbers=self.numbers,
        )


def with_later_columns(table: pa.Table) -> pa.Table:
    """``table`` with the columns added to the schema after it was written, filled with their defaults."""
    for name, value in LATER_COLUMNS.items():
        if name not in table.column_names:
            kind = RECORD_SCHEMA.field(name).type
            table = table.append_column(pa.field(name, kind), pa.array([value] * table.num_rows, type=kind))
    return table


def _numbers(chunk: pa.Array, out: npt.NDArray[Any]) -> None:
    out[...] = chunk.to_numpy(zero_copy_only=False)


def _codes(chunk: pa.Array, out: npt.NDArray[np.int32], *, names: dict[str, int]) -> None:
    """A chunk's strings as codes into ``names`` (extended with names not seen before), written to ``out``."""
    encoded = chunk if isinstance(chunk, pa.DictionaryArray) else chunk.dictionary_encode()
    dictionary = encoded.dictionary.to_pylist()
    # One slot past the dictionary stands for null, which the schema forbids but a writer might produce.
    lookup = np.array([names.setdefault(str(v), len(names)) for v in dictionary] + [-1], dtype=np.int32)
    indices = encoded.indices
    if indices.null_count:
        indices = indices.fill_null(len(dictionary))
    np.take(lookup, indices.to_numpy(zero_copy_only=False), out=out)


def _row_count(path: Path) -> int:
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (OSError, pa.ArrowException) as exc:
        raise AnalysisError(
            f"records file {path} is not readable Parquet ({exc}): move it out of records/ or re-run"
        ) from exc


def _read_part(path: Path) -> pa.Table:
    try:
        schema = pq.read_schema(path)
        missing = [column for column in COLUMNS if column not in schema.names and column not in LATER_COLUMNS]
        if missing:
            raise AnalysisError(
                f"records file {path} lacks column(s) {', '.join(missing)}: "
                "it was not written with the schema in analysis/records.py"
            )
        present = [column for column in COLUMNS if column in schema.names]
        strings = [column for column in STRING_COLUMNS if column in schema.names]
        return pq.read_table(path, columns=present, read_dictionary=strings)
    except (OSError, pa.ArrowException) as exc:
        raise AnalysisError(
            f"records file {path} is not readable Parquet ({exc}): move it out of records/ or re-run"
        ) from exc
