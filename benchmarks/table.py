"""One line of a benchmark table, shared by every script in ``benchmarks/`` and ``make perf``.

>>> print(format_rows([Row("recording user / wrk", 0.27, "x", "goal >= 0.3")]))
recording user / wrk  0.27x  goal >= 0.3
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """What was measured, its value (None: not measured, the note says why), its unit, a note (the goal)."""

    what: str
    value: float | None
    unit: str
    note: str = ""


def format_value(row: Row) -> str:
    if row.value is None:
        return "-"
    if row.unit == "req/s":
        return f"{row.value:,.0f} req/s"
    if row.unit == "x":
        return f"{row.value:.2f}x"
    if row.unit == "ms":
        return f"{row.value:,.0f} ms"
    return f"{row.value:,.2f} {row.unit}"


def format_rows(rows: Sequence[Row]) -> str:
    """The rows as an aligned text table."""
    width = max((len(row.what) for row in rows), default=0)
    values = [format_value(row) for row in rows]
    value_width = max((len(value) for value in values), default=0)
    return "\n".join(
        f"{row.what:<{width}}  {value:>{value_width}}  {row.note}".rstrip()
        for row, value in zip(rows, values, strict=True)
    )
