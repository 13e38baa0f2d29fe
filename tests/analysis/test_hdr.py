"""The numpy HDR percentiles give HdrHistogram's answers, value for value."""

from __future__ import annotations

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram

from analysis import hdr

PERCENTILES = [0.0, 1.0, 25.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0]


def _reference(values_us: np.ndarray) -> HdrHistogram:
    histogram = HdrHistogram(hdr.LOWEST_US, hdr.HIGHEST_US, hdr.SIGNIFICANT_DIGITS)
    for value in values_us:
        histogram.record_value(int(value))
    return histogram


@pytest.mark.parametrize(
    "values_ms",
    [
        np.random.default_rng(1).lognormal(0.0, 2.5, 4000),  # µs … seconds: every bucket size
        np.random.default_rng(2).exponential(5.0, 3000),
        np.array(
            [0.0, 0.0004, 0.001, 2.047, 2.048, 2.049, 59_999.0, 60_000.0]
        ),  # bucket edges, 0 and the top
        np.full(100, 1.0),
        np.array([42.0]),
    ],
    ids=["lognormal", "exponential", "edges", "constant", "single"],
)
def test_percentiles_match_hdrhistogram(values_ms: np.ndarray) -> None:
    reference = _reference(hdr.to_microseconds(values_ms))
    counts = hdr.histogram_counts(values_ms)
    assert np.array_equal(counts[0], np.array(reference.counts[: reference.counts_len]))
    ours = hdr.value_at_percentiles(counts, PERCENTILES)[0]
    theirs = [reference.get_value_at_percentile(p) / 1000.0 for p in PERCENTILES]
    assert ours.tolist() == theirs


def test_grouped_counts_equal_one_histogram_per_group() -> None:
    rng = np.random.default_rng(3)
    values = rng.lognormal(0.0, 1.0, 2000)
    groups = rng.integers(0, 3, 2000)
    grouped = hdr.histogram_counts(values, groups, 3)
    for group in range(3):
        assert np.array_equal(grouped[group], hdr.histogram_counts(values[groups == group])[0])


def test_loaded_counts_make_a_real_hdrhistogram() -> None:
    values = np.random.default_rng(4).lognormal(1.0, 1.0, 1000)
    loaded = hdr.to_hdrhistogram(hdr.histogram_counts(values)[0])
    reference = _reference(hdr.to_microseconds(values))
    assert loaded.get_total_count() == 1000
    assert [loaded.get_value_at_percentile(p) for p in PERCENTILES] == [
        reference.get_value_at_percentile(p) for p in PERCENTILES
    ]
    assert loaded.encode()  # usable by any HdrHistogram tool


def test_empty_rows_have_no_percentiles_and_huge_values_are_clipped() -> None:
    counts = np.vstack(
        [hdr.histogram_counts(np.array([]))[0], hdr.histogram_counts(np.array([120_000.0]))[0]]
    )
    result = hdr.value_at_percentiles(counts, [50.0])
    assert np.isnan(result[0, 0])
    assert result[1, 0] == pytest.approx(60_000.0, rel=1e-3)
