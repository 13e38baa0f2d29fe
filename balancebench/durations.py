"""Durations as scenario files write them (``250ms``, ``20s``, ``2m`` or a number of seconds), as seconds.

Its own module, below both the scenario model and the scenario events that use it.

    >>> parse_duration("1.5s")
    1.5
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator


def parse_duration(value: object) -> float:
    """Seconds from ``250ms``, ``1.5s``, ``2m``, ``1h`` or a bare number of seconds (zero allowed)."""
    from loadtests.policy import PolicyError
    from loadtests.policy import parse_duration as parse_text

    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '250ms', '20s' or '2m', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"must not be negative, got {value!r}")
        return float(value)
    try:
        return parse_text(str(value), what="the value", allow_zero=True)
    except PolicyError as exc:
        raise ValueError(str(exc)) from None


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written in YAML as ``250ms``, ``20s``, ``2m`` or a number."""
