"""Fixtures of the end-to-end `balancebench run` tests: a machine that can build an nftables netns cluster."""

from __future__ import annotations

import pytest

from balancebench.clusters.netns.provider import check_machine
from balancebench.errors import MissingFeature


@pytest.fixture(scope="module")
def needs_nftables_cluster() -> None:
    """Skip the module, with the machine's own reason, where an nftables netns cluster cannot be built."""
    try:
        check_machine("nftables")
    except MissingFeature as exc:
        pytest.skip(str(exc))
