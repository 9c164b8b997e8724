"""Kopf's retried API requests are WARNINGs in hyft's log (ERROR means a person must act); the failure of
the last try stays an ERROR."""
from __future__ import annotations

import logging

from hyft_operator import handlers


def test_a_retried_request_is_a_warning_and_its_last_failure_an_error(caplog):
    handlers.demote_retried_requests()
    watching = logging.getLogger("kopf._cogs.clients.watching")  # the logger Kopf's watch-streams retry on
    with caplog.at_level(logging.DEBUG):
        watching.error("Request attempt #1/9 failed; will retry: GET https://127.0.0.1/apis/hyft.io -> "
                       "APITooManyRequestsError('storage is (re)initializing')")
        watching.error("Request attempt #9/9 failed; escalating: GET https://127.0.0.1/apis/hyft.io -> ...")
        logging.getLogger("elsewhere").error("Request attempt #1/9 failed; will retry: not Kopf's")
    assert [(r.name, r.levelname) for r in caplog.records] == [
        ("kopf._cogs.clients.watching", "WARNING"), ("kopf._cogs.clients.watching", "ERROR"),
        ("elsewhere", "ERROR")]
