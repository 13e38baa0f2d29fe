"""Compare two runs' summaries cell by cell and flag regressions: the nightly CI gate.

Cells are matched by their ``cell`` id. A matched cell regresses when its balance, tail latency or error
rate got worse by more than a threshold; a cell of the base run missing from the head run fails the gate too
(coverage was lost) unless missing cells are allowed; a cell only the head run has is reported as new.

    >>> base, head = load_summary("base/summary.json"), load_summary("run/summary.json")  # doctest: +SKIP
    >>> compare(base, head).crossed                                                        # doctest: +SKIP
    False
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from analysis.errors import AnalysisError
from analysis.summary import check_summary, percent, render_text_table

Status = Literal["ok", "regressed", "missing", "new"]


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """How much worse a cell may get before the gate fails.

    ``max_jain_drop``: absolute drop of Jain's index (0.05: 0.98 → 0.92 fails). ``max_p99_increase``: relative
    p99 growth (0.25 = +25 %), flagged only when p99 also grew by more than ``min_p99_delta_ms`` so that
    sub-millisecond jitter on a shared CI machine does not fail the build. ``max_error_rate_increase``:
    absolute growth of errors / requests (0.01 = one percentage point).

    >>> Thresholds(max_jain_drop=0.02).max_p99_increase
    0.25
    """

    max_jain_drop: float = 0.05
    max_p99_increase: float = 0.25
    min_p99_delta_ms: float = 1.0
    max_error_rate_increase: float = 0.01
    allow_missing_cells: bool = False

    def __post_init__(self) -> None:
        for name in ("max_jain_drop", "max_p99_increase", "min_p99_delta_ms", "max_error_rate_increase"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                flag = "--" + name.replace("_", "-")
                raise AnalysisError(f"{flag} must be a number >= 0, got {value!r}")

    def describe(self) -> str:
        return (
            f"max Jain drop {self.max_jain_drop:g}, max p99 increase {self.max_p99_increase:.0%} "
            f"(and > {self.min_p99_delta_ms:g} ms), "
            f"max error-rate increase {self.max_error_rate_increase * 100:g} pp"
        )


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True, kw_only=True)
class CellDiff:
    """One cell in both runs (or in one of them), with the reasons it crossed a threshold."""

    cell: str
    status: Status
    jain: tuple[float | None, float | None]
    p99_ms: tuple[float | None, float | None]
    error_rate: tuple[float | None, float | None]
    sockets_used: tuple[int | None, int | None]
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """The per-cell diff of two runs and whether it fails the gate."""

    thresholds: Thresholds
    cells: tuple[CellDiff, ...]

    @property
    def failures(self) -> tuple[CellDiff, ...]:
        """Cells that fail the gate: regressions, and base cells missing from head unless allowed."""
        allowed_missing = self.thresholds.allow_missing_cells
        return tuple(
            diff
            for diff in self.cells
            if diff.status == "regressed" or (diff.status == "missing" and not allowed_missing)
        )

    @property
    def crossed(self) -> bool:
        """True when any threshold was crossed: the CI gate fails."""
        return bool(self.failures)

    def verdict(self) -> str:
        """One line: how many cells crossed a threshold, and which thresholds applied."""
        compared = sum(1 for diff in self.cells if diff.status in ("ok", "regressed"))
        if self.crossed:
            head = f"{len(self.failures)} of {len(self.cells)} cells crossed a threshold"
        else:
            head = f"no threshold crossed in {compared} compared cells"
        return f"compare: {head} ({self.thresholds.describe()})"

    def rows(self) -> list[list[str]]:
        """The diff table as text cells, one row per cell."""
        return [
            [
                diff.cell,
                _pair(diff.jain, "{:.3f}"),
                _delta(diff.jain, "{:+.3f}"),
                _pair(diff.p99_ms, "{:.2f}"),
                _relative(diff.p99_ms),
                _pair_percent(diff.error_rate),
                _pair(diff.sockets_used, "{:,}"),
                self._verdict_of(diff),
            ]
            for diff in self.cells
        ]

    def render_text(self) -> str:
        """An aligned plain-text table and the verdict line (what the CLI prints)."""
        return render_text_table(COMPARE_COLUMNS, self.rows()) + "\n" + self.verdict() + "\n"

    def render_markdown(self) -> str:
        """The same table in Markdown, for a CI job summary or a pull-request comment."""
        lines = [
            "| " + " | ".join(COMPARE_COLUMNS) + " |",
            "|" + "|".join("---" for _ in COMPARE_COLUMNS) + "|",
        ]
        lines += ["| " + " | ".join(value.replace("|", "\\|") for value in row) + " |" for row in self.rows()]
        return "\n".join([*lines, "", self.verdict()]) + "\n"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: thresholds, crossed, and per cell its status, base/head figures and reasons."""
        return {
            "thresholds": {
                "max_jain_drop": self.thresholds.max_jain_drop,
                "max_p99_increase": self.thresholds.max_p99_increase,
                "min_p99_delta_ms": self.thresholds.min_p99_delta_ms,
                "max_error_rate_increase": self.thresholds.max_error_rate_increase,
                "allow_missing_cells": self.thresholds.allow_missing_cells,
            },
            "crossed": self.crossed,
            "cells": [
                {
                    "cell": diff.cell,
                    "status": diff.status,
                    "fails_gate": diff in self.failures,
                    "jain": {"base": diff.jain[0], "head": diff.jain[1]},
                    "p99_ms": {"base": diff.p99_ms[0], "head": diff.p99_ms[1]},
                    "error_rate": {"base": diff.error_rate[0], "head": diff.error_rate[1]},
                    "sockets_used": {"base": diff.sockets_used[0], "head": diff.sockets_used[1]},
                    "reasons": list(diff.reasons),
                }
                for diff in self.cells
            ],
        }

    def _verdict_of(self, diff: CellDiff) -> str:
        if diff.status == "regressed":
            return "REGRESSED: " + "; ".join(diff.reasons)
        if diff.status == "missing":
            return "missing in head (allowed)" if self.thresholds.allow_missing_cells else "MISSING in head"
        if diff.status == "new":
            return "new in head"
        return "ok"


COMPARE_COLUMNS: tuple[str, ...] = (
    "cell",
    "Jain base → head",
    "Δ Jain",
    "p99 ms base → head",
    "Δ p99",
    "errors base → head",
    "sockets base → head",
    "verdict",
)


def compare(
    base: Mapping[str, Any], head: Mapping[str, Any], thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> Comparison:
    """Diff two summary.json documents cell by cell against the thresholds.

    >>> compare(base_summary, head_summary, Thresholds(max_jain_drop=0.02)).crossed   # doctest: +SKIP
    """
    base_cells = {entry["cell"]: entry for entry in check_summary(dict(base), source="base summary")["cells"]}
    head_cells = {entry["cell"]: entry for entry in check_summary(dict(head), source="head summary")["cells"]}
    diffs = [
        _diff(cell_id, base_cells[cell_id], head_cells.get(cell_id), thresholds) for cell_id in base_cells
    ]
    diffs += [
        _diff(cell_id, None, head_cells[cell_id], thresholds)
        for cell_id in head_cells
        if cell_id not in base_cells
    ]
    return Comparison(thresholds=thresholds, cells=tuple(diffs))


def _diff(
    cell_id: str, base: Mapping[str, Any] | None, head: Mapping[str, Any] | None, thresholds: Thresholds
) -> CellDiff:
    jain = (_get(base, "balance", "jain"), _get(head, "balance", "jain"))
    p99 = (_get(base, "latency_ms", "p99"), _get(head, "latency_ms", "p99"))
    errors = (_get(base, "error_rate"), _get(head, "error_rate"))
    sockets = (_get(base, "sockets_used"), _get(head, "sockets_used"))
    figures = {"jain": jain, "p99_ms": p99, "error_rate": errors, "sockets_used": sockets}
    if head is None:
        return CellDiff(cell=cell_id, status="missing", **figures)
    if base is None:
        return CellDiff(cell=cell_id, status="new", **figures)
    reasons = _regressions(jain, p99, errors, thresholds)
    if not head.get("requests") and base.get("requests"):
        reasons.insert(0, "no requests measured")
    return CellDiff(cell=cell_id, status="regressed" if reasons else "ok", reasons=tuple(reasons), **figures)


def _regressions(
    jain: tuple[float | None, float | None],
    p99: tuple[float | None, float | None],
    errors: tuple[float | None, float | None],
    thresholds: Thresholds,
) -> list[str]:
    reasons = []
    base_jain, head_jain = jain
    if base_jain is not None and head_jain is None:
        reasons.append("Jain undefined in head: no pod answered")
    elif base_jain is not None and head_jain is not None and base_jain - head_jain > thresholds.max_jain_drop:
        reasons.append(f"Jain dropped {base_jain - head_jain:.3f} > {thresholds.max_jain_drop:g}")
    base_p99, head_p99 = p99
    if base_p99 is not None and head_p99 is not None:
        grew = head_p99 - base_p99
        if grew > thresholds.min_p99_delta_ms and head_p99 > base_p99 * (1 + thresholds.max_p99_increase):
            relative = f"+{grew / base_p99:.0%}" if base_p99 > 0 else f"+{grew:.2f} ms"
            reasons.append(f"p99 {relative} > {thresholds.max_p99_increase:.0%}")
    base_errors, head_errors = errors
    if base_errors is not None and head_errors is not None:
        grew = head_errors - base_errors
        if grew > thresholds.max_error_rate_increase:
            reasons.append(
                f"error rate +{grew * 100:.2f} pp > {thresholds.max_error_rate_increase * 100:g} pp"
            )
    return reasons


def _get(entry: Mapping[str, Any] | None, *keys: str) -> Any:
    value: Any = entry
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _pair(values: Sequence[float | int | None], form: str) -> str:
    base, head = (("–" if v is None else form.format(v)) for v in values)
    return f"{base} → {head}"


def _pair_percent(values: Sequence[float | None]) -> str:
    base, head = values
    return f"{percent(base)} → {percent(head)}"


def _delta(values: Sequence[float | None], form: str) -> str:
    base, head = values
    return "–" if base is None or head is None else form.format(head - base)


def _relative(values: Sequence[float | None]) -> str:
    base, head = values
    if base is None or head is None:
        return "–"
    if base == 0:
        return "–" if head == 0 else "+∞"
    return f"{(head - base) / base:+.0%}"
