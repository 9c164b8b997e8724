"""Conditions: one upsert, the kstatus and phase conditions that follow the phase, and the Failed
state (built here only: the lifecycle's failures and the reconciler's invalid specs both use it)."""
from __future__ import annotations

import datetime as dt

from ..status import IN_PROGRESS_PHASES, PHASE_CONDITIONS, Condition, ConditionType, HunyuanFineTuneStatus, Reason


def timestamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(ts: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")) if ts else None


def set_condition(conditions: list[Condition], type_: str, status: str, reason: str, message: str,
                  now: dt.datetime, generation: int | None) -> None:
    """Upsert one condition; lastTransitionTime moves only when its status changes."""
    for cond in conditions:
        if cond.type == type_:
            if cond.status != status:
                cond.lastTransitionTime = timestamp(now)
            cond.status, cond.reason, cond.message, cond.observedGeneration = status, reason, message, generation
            return
    conditions.append(Condition(type=type_, status=status, reason=reason, message=message,
                                lastTransitionTime=timestamp(now), observedGeneration=generation))


def drop_condition(status: HunyuanFineTuneStatus, type_: str) -> None:
    status.conditions = [c for c in status.conditions if c.type != type_]


def follow_phase(status: HunyuanFineTuneStatus, reason: str, now: dt.datetime) -> None:
    """The conditions that say the phase: one per phase, and kstatus' Reconciling, Stalled and Ready."""
    phase, message, gen, conds = status.phase, status.message, status.observedGeneration, status.conditions
    for type_ in PHASE_CONDITIONS:
        active = phase == type_
        set_condition(conds, type_, "True" if active else "False", reason if active else f"Not{type_}",
                      message if active else "", now, gen)
    in_progress = phase in IN_PROGRESS_PHASES
    set_condition(conds, ConditionType.RECONCILING, "True" if in_progress else "False",
                  reason if in_progress else Reason.IDLE, message if in_progress else "", now, gen)
    failed = phase == "Failed"
    set_condition(conds, ConditionType.STALLED, "True" if failed else "False",
                  reason if failed else Reason.NOT_STALLED, message if failed else "", now, gen)
    set_condition(conds, ConditionType.READY, "True" if phase == "Succeeded" else "False", phase, message, now, gen)


def fail(status: HunyuanFineTuneStatus, reason: str, message: str, now: dt.datetime) -> None:
    """The job is Failed for good: phase, message, completion time and every condition that follows."""
    status.phase, status.message = "Failed", message
    status.completionTime = status.completionTime or timestamp(now)
    drop_condition(status, ConditionType.SPEC_VALID)  # the Failed condition says it now
    follow_phase(status, reason, now)
