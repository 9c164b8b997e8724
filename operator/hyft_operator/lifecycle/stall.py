"""Stall and start-up: a Running gang whose master trainer makes no step for
runPolicy.stallTimeoutSeconds (in the trainer's own clock), or no first step
runPolicy.startupTimeoutSeconds after the gang started, is restarted as a failure would be."""
from __future__ import annotations

from ..builders import pod_name
from ..status import FailureInfo, Reason
from . import failure
from .gang import Gang


def apply(gang: Gang) -> bool:
    policy = gang.spec.runPolicy
    stall, startup = policy.stallTimeoutSeconds, policy.startupTimeoutSeconds
    started = gang.started()
    if not gang.watching or not (stall or startup) or gang.st.phase != "Running" or started is None:
        return False
    clock = scrape.clock if (scrape := gang.current_scrape()) else None  # the trainer's clock
    if clock is not None and clock.last_step is not None:
        limit, idle = stall, clock.idle_seconds
        reason, why = Reason.STALL_TIMEOUT, f"the master trainer made no step for {idle:.0f}s (last step {clock.step})"
    else:
        limit = startup
        idle = clock.idle_seconds if clock else gang.now.timestamp() - started
        reason, why = Reason.STARTUP_TIMEOUT, (f"the master trainer made no first step {idle:.0f}s after it started"
                                               + ("" if clock else " (its metrics never answered)"))
    if not limit:
        return False
    if idle <= limit:
        gang.requeue(max(1.0, limit - idle))
        return False
    setting = "stallTimeoutSeconds" if reason == Reason.STALL_TIMEOUT else "startupTimeoutSeconds"
    why += f"; runPolicy.{setting} is {limit}s"
    failure.restart_or_fail(gang, FailureInfo(pod=pod_name(gang.job.metadata["name"], 0), reason=reason,
                                              message=why, retryable=True), why, reason)
    return True
