"""A finished job: a failed job's surviving pods are deleted at once; with
runPolicy.ttlSecondsAfterFinished, every pod goes that long after completion (the resource stays)."""
from __future__ import annotations

import datetime as dt

from ..status import Reason
from .conditions import parse_time
from .gang import Event, Gang


def apply(gang: Gang) -> None:
    if gang.st.phase == "Failed":
        gang.delete(gang.current, only_active=True)
    ttl = gang.spec.runPolicy.ttlSecondsAfterFinished
    done = parse_time(gang.st.completionTime)
    if ttl is None or done is None or gang.st.podsDeletedAfterTtl:
        return
    remaining = (done + dt.timedelta(seconds=ttl) - gang.now).total_seconds()
    if remaining > 0:
        gang.requeue(remaining)
        return
    gang.delete(gang.current)
    gang.st.podsDeletedAfterTtl = True
    gang.plan.events.append(Event("Normal", Reason.PODS_DELETED,
                                  f"deleted the pods {ttl}s after the job finished (ttlSecondsAfterFinished)"))
