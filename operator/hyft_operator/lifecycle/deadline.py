"""runPolicy.activeDeadlineSeconds: counted from the job's start; once past, the pods are deleted
and the job fails. Before that, the pass wakes up when it falls due."""
from __future__ import annotations

import datetime as dt

from ..status import Reason
from .conditions import parse_time
from .gang import Gang


def apply(gang: Gang) -> bool:
    deadline, start = gang.spec.runPolicy.activeDeadlineSeconds, parse_time(gang.st.startTime)
    if deadline is None or start is None:
        return False
    remaining = (start + dt.timedelta(seconds=deadline) - gang.now).total_seconds()
    if remaining > 0:
        gang.requeue(remaining)
        return False
    gang.delete(gang.current, only_active=True)
    gang.finish("Failed", Reason.DEADLINE_EXCEEDED,
                f"activeDeadlineSeconds ({deadline}s) exceeded since the job started", "Warning")
    return True
