"""Reading records: many part files become one categorical frame; unreadable input says which file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.errors import AnalysisError
from analysis.loading import normalize_records, read_columns, read_records, record_files, write_records
from analysis.manifest import Run
from analysis.metrics import compute_run
from analysis.records import COLUMNS, RECORDS_DIR
from tests.analysis.builders import failed, frame, meta, spread


def test_parts_with_different_pods_concatenate_into_one_frame(tmp_path: Path) -> None:
    records = tmp_path / RECORDS_DIR
    write_records(records / "source-0-1-00000.parquet", frame(spread([3, 0, 2])))
    write_records(records / "source-1-1-00000.parquet", frame(spread([0, 4]) + failed(2)))
    (records / ".source-1-1-00001.parquet.tmp").write_bytes(b"half written")
    (records / ".hidden.parquet").write_bytes(b"a writer's temporary")
    loaded = read_records(tmp_path)
    assert len(loaded) == 11
    assert list(loaded.columns) == list(COLUMNS)
    assert isinstance(loaded["target_pod"].dtype, pd.CategoricalDtype)
    assert loaded["target_pod"].value_counts().to_dict() == {"echo-1": 4, "echo-0": 3, "echo-2": 2, "": 2}
    assert loaded["client_conn"].dtype == "int64" and loaded["conn_request"].dtype == "int32"


@pytest.mark.parametrize("make_dir", [False, True], ids=["no records dir", "empty records dir"])
def test_no_records_is_an_empty_typed_frame(tmp_path: Path, make_dir: bool) -> None:
    if make_dir:
        (tmp_path / RECORDS_DIR).mkdir()
    loaded = read_records(tmp_path)
    assert loaded.empty and list(loaded.columns) == list(COLUMNS)
    assert record_files(tmp_path) == []


def test_unreadable_part_names_the_file(tmp_path: Path) -> None:
    (tmp_path / RECORDS_DIR).mkdir()
    (tmp_path / RECORDS_DIR / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(AnalysisError, match=r"records file .*broken.parquet is not readable Parquet"):
        read_records(tmp_path)


def test_part_without_a_column_is_rejected(tmp_path: Path) -> None:
    table = pa.Table.from_pandas(frame(spread([2])).drop(columns=["wait_ms"]), preserve_index=False)
    (tmp_path / RECORDS_DIR).mkdir()
    pq.write_table(table, tmp_path / RECORDS_DIR / "old.parquet")
    with pytest.raises(AnalysisError, match=r"old.parquet lacks column\(s\) wait_ms"):
        read_records(tmp_path)


def test_narrower_integer_types_are_widened(tmp_path: Path) -> None:
    table = pa.Table.from_pandas(frame(spread([2])), preserve_index=False)
    table = table.set_column(
        table.schema.get_field_index("client_conn"), "client_conn", table["client_conn"].cast(pa.int32())
    )
    (tmp_path / RECORDS_DIR).mkdir()
    pq.write_table(table, tmp_path / RECORDS_DIR / "narrow.parquet")
    assert read_records(tmp_path)["client_conn"].dtype == "int64"


def test_hand_built_frames_are_checked_and_typed() -> None:
    typed = normalize_records(frame(spread([1])))
    assert isinstance(typed["cell"].dtype, pd.CategoricalDtype)
    with pytest.raises(AnalysisError, match=r"records lack column\(s\) ts"):
        normalize_records(frame(spread([1])).drop(columns=["ts"]))
    with pytest.raises(AnalysisError, match="records column latency_ms holds values that are not double"):
        normalize_records(frame(spread([1])).assign(latency_ms="fast"))


def test_streamed_columns_compute_what_the_hand_built_frame_does(tmp_path: Path) -> None:
    first = spread([5, 0, 9], cell="x")
    second = failed(3, cell="y") + spread([0, 4], cell="x")
    write_records(tmp_path / RECORDS_DIR / "a.parquet", frame(first))
    write_records(tmp_path / RECORDS_DIR / "b.parquet", frame(second))
    run = Run(scenario="s", cells=[meta(pods=3, cell="x"), meta(pods=3, cell="y")])
    streamed = read_columns(tmp_path)
    assert streamed.size == 21
    assert streamed.names["target_pod"] == ["echo-0", "echo-2", "", "echo-1"]  # first seen, across files
    assert compute_run(run, streamed) == compute_run(run, frame(first + second))
    assert [pod.requests for pod in compute_run(run, streamed)[0].pods] == [5, 4, 9]
    (tmp_path / "empty").mkdir()
    assert read_columns(tmp_path / "empty").size == 0
