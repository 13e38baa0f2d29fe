"""The one exception analysis raises for bad input; the CLI turns it into one line and exit code 2.

``analysis/`` imports nothing else from the repository, so it cannot raise
``balancebench.errors.InvalidInput`` itself: callers translate at their boundary
(``raise InvalidInput(str(exc)) from exc``).
"""

from __future__ import annotations


class AnalysisError(ValueError):
    """Bad analysis input (a missing run directory, an unreadable record file, a summary of another schema).

    The message is one sentence that says what is wrong and how to fix it.
    """
