"""Real client libraries as drivers: the registry of the programs in ``src/`` that send requests.

A driver named here runs the load of a source pod through a real client library's own connection pool,
the way an application in that language would, and produces the same per-request records as the other
drivers (see ``bridge``). Adding a client is one file (a :class:`~loadtests.realclients.base.RealClient`),
its source under ``src/``, its test, and one row below.

    >>> REAL_CLIENTS["okhttp"].library
    'OkHttp 3.13 (ConnectionPool)'
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from loadtests.realclients.aiohttp import AIOHTTP
from loadtests.realclients.base import RealClient
from loadtests.realclients.golang import GO
from loadtests.realclients.jdk import JDK
from loadtests.realclients.okhttp import OKHTTP

REAL_CLIENTS: Mapping[str, RealClient] = MappingProxyType(
    {client.name: client for client in (GO, OKHTTP, JDK, AIOHTTP)}
)
"""Every real client driver by the name ``load.driver`` / ``--driver`` uses."""

__all__ = ["REAL_CLIENTS", "RealClient"]
