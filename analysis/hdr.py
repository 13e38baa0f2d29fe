"""HDR-histogram latency percentiles computed with numpy: HdrHistogram's buckets and answers, at array speed.

Recording 10 M values one ``HdrHistogram.record_value`` call at a time takes minutes in Python. Here the
bucket index of every value is computed vectorized with HdrHistogram's own arithmetic (1 µs … 60 s, 3
significant digits), counted with ``np.bincount``, and percentiles are read from the cumulative counts
exactly as ``HdrHistogram.get_value_at_percentile`` reads them — so the numbers match the reference
implementation value for value (``tests/analysis/test_hdr.py`` checks that). :func:`to_hdrhistogram` loads
counts into a real ``HdrHistogram`` when one is needed (encoding, merging with other tools).

    >>> counts = histogram_counts(np.array([1.0, 2.0, 3.0]))
    >>> value_at_percentiles(counts, [50.0]).tolist()
    [[2.0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3


@dataclass(frozen=True, kw_only=True)
class HdrLayout:
    """The bucket layout of an HdrHistogram, taken from the reference implementation so both always agree."""

    unit_magnitude: int
    sub_bucket_half_count_magnitude: int
    sub_bucket_half_count: int
    sub_bucket_mask: int
    counts_len: int
    highest: int

    @classmethod
    def of(cls, lowest: int, highest: int, digits: int) -> HdrLayout:
        reference = HdrHistogram(lowest, highest, digits)
        return cls(
            unit_magnitude=reference.unit_magnitude,
            sub_bucket_half_count_magnitude=reference.sub_bucket_half_count_magnitude,
            sub_bucket_half_count=reference.sub_bucket_half_count,
            sub_bucket_mask=reference.sub_bucket_mask,
            counts_len=reference.counts_len,
            highest=highest,
        )


LAYOUT = HdrLayout.of(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
COUNTS_LEN = LAYOUT.counts_len


def to_microseconds(values_ms: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Milliseconds → whole microseconds; values beyond 60 s are recorded as 60 s rather than dropped."""
    micros = np.rint(np.asarray(values_ms, dtype=np.float64) * 1000.0)
    return np.clip(np.nan_to_num(micros, nan=0.0), 0, LAYOUT.highest).astype(np.int64)


def counts_index(values_us: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """HdrHistogram's ``_counts_index_for`` for every value at once."""
    layout = LAYOUT
    # frexp's exponent is the bit length of an integer below 2**53: 64 - clz(value) in the reference.
    _, bit_length = np.frexp((values_us | layout.sub_bucket_mask).astype(np.float64))
    bucket = (
        bit_length.astype(np.int64) - layout.unit_magnitude - (layout.sub_bucket_half_count_magnitude + 1)
    )
    sub_bucket = values_us >> (bucket + layout.unit_magnitude)
    base = (bucket + 1) << layout.sub_bucket_half_count_magnitude
    return base + sub_bucket - layout.sub_bucket_half_count


def histogram_counts(
    values_ms: npt.ArrayLike,
    groups: npt.NDArray[np.integer] | None = None,
    n_groups: int = 1,
) -> npt.NDArray[np.int64]:
    """Bin latencies (ms) into HDR counts, one row per group: shape ``(n_groups, COUNTS_LEN)``."""
    index = counts_index(to_microseconds(values_ms))
    if groups is None:
        return np.bincount(index, minlength=COUNTS_LEN).reshape(1, COUNTS_LEN)
    keys = groups.astype(np.int64) * COUNTS_LEN + index
    return np.bincount(keys, minlength=n_groups * COUNTS_LEN).reshape(n_groups, COUNTS_LEN)


def histogram_counts_from_index(
    index: npt.NDArray[np.int64], groups: npt.NDArray[np.integer] | None = None, n_groups: int = 1
) -> npt.NDArray[np.int64]:
    """Like :func:`histogram_counts` for values already turned into bucket indices (computed once, reused)."""
    if groups is None:
        return np.bincount(index, minlength=COUNTS_LEN).reshape(1, COUNTS_LEN)
    keys = groups.astype(np.int64) * COUNTS_LEN + index
    return np.bincount(keys, minlength=n_groups * COUNTS_LEN).reshape(n_groups, COUNTS_LEN)


def value_at_percentiles(
    counts: npt.NDArray[np.int64], percentiles: Sequence[float]
) -> npt.NDArray[np.float64]:
    """Latency (ms) at each percentile for each row of counts; NaN for a row with no values.

    Same rule as ``HdrHistogram.get_value_at_percentile``: the first bucket whose cumulative count reaches
    ``max(1, int(p * total / 100 + 0.5))``, reported as the highest value equivalent to that bucket.
    """
    counts = np.atleast_2d(counts)
    cumulative = np.cumsum(counts, axis=1)
    totals = cumulative[:, -1]
    result = np.full((counts.shape[0], len(percentiles)), np.nan)
    for column, percentile in enumerate(percentiles):
        requested = min(float(percentile), 100.0)
        # The reference truncates (p * total / 100 + 0.5) toward zero: floor, since all terms are positive.
        targets = np.maximum(np.floor(requested * totals / 100 + 0.5), 1).astype(np.int64)
        for row in np.flatnonzero(totals > 0):
            index = int(np.searchsorted(cumulative[row], targets[row], side="left"))
            value = _value_from_index(index)
            micros = _highest_equivalent(value) if requested else _lowest_equivalent(value)
            result[row, column] = micros / 1000.0
    return result


def to_hdrhistogram(counts: npt.NDArray[np.int64]) -> HdrHistogram:
    """A real ``HdrHistogram`` holding these counts (one row), e.g. to ``encode()`` it for other tools."""
    row = np.asarray(counts, dtype=np.int64).reshape(-1)
    histogram = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
    nonzero = np.flatnonzero(row)
    for index in nonzero:
        histogram.counts[int(index)] = int(row[index])
    if nonzero.size:
        histogram.set_internal_tacking_values(int(nonzero[0]), int(nonzero[-1]), int(row.sum()))
    return histogram


def _value_from_index(index: int) -> int:
    layout = LAYOUT
    bucket = (index >> layout.sub_bucket_half_count_magnitude) - 1
    sub_bucket = (index & (layout.sub_bucket_half_count - 1)) + layout.sub_bucket_half_count
    if bucket < 0:
        sub_bucket -= layout.sub_bucket_half_count
        bucket = 0
    return sub_bucket << (bucket + layout.unit_magnitude)


def _bucket_of(value: int) -> tuple[int, int]:
    layout = LAYOUT
    bucket = (value | layout.sub_bucket_mask).bit_length() - layout.unit_magnitude
    bucket -= layout.sub_bucket_half_count_magnitude + 1
    return bucket, value >> (bucket + layout.unit_magnitude)


def _lowest_equivalent(value: int) -> int:
    bucket, sub_bucket = _bucket_of(value)
    return sub_bucket << (bucket + LAYOUT.unit_magnitude)


def _highest_equivalent(value: int) -> int:
    bucket, sub_bucket = _bucket_of(value)
    lowest = sub_bucket << (bucket + LAYOUT.unit_magnitude)
    if sub_bucket >= 2 * LAYOUT.sub_bucket_half_count:
        bucket += 1
    return lowest + (1 << (LAYOUT.unit_magnitude + bucket)) - 1
