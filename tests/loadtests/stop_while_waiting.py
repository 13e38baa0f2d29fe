"""A locustfile for one test: the balancebench users, stopped while they wait between two requests.

Locust stops a user that is waiting (``User.stop`` in state ``waiting``) by killing its greenlet, and gevent
delivers that kill on a later turn of the event loop. With no think time the user waits in ``sleep(0)``,
whose wake-up is already queued, so it resumes first and the kill used to land while its next request was
in flight: the server answered a request no record ever mentioned. After ``STOP_AFTER`` requests this
file asks each user to stop exactly at that moment, then ends the run.
"""

from __future__ import annotations

from typing import Any

import gevent
from locust import events
from locust.env import Environment

from loadtests.locustfile import LoadUser

__all__ = ["LoadUser"]

STOP_AFTER = 20
_seen = 0


@events.request.add_listener
def _stop_soon(**_: Any) -> None:
    global _seen
    _seen += 1
    if _seen == STOP_AFTER:
        # Runs before the user's sleep(0) in wait() returns, so the user is stopped while it waits.
        gevent.spawn(_stop_users, _environment)


_environment: Environment | None = None


@events.init.add_listener
def _keep(environment: Environment, **_: Any) -> None:
    global _environment
    _environment = environment


def _stop_users(environment: Environment | None) -> None:
    assert environment is not None and environment.runner is not None
    runner = environment.runner
    users = [greenlet.args[0] for greenlet in runner.user_greenlets]
    for user in users:
        user.stop(force=False)  # what Runner.stop_users does with a stop timeout
    runner.user_greenlets.join(timeout=10)
    runner.quit()
