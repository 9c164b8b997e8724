"""An invalid spec (what the API server cannot check: what the trainer refuses, pass-through
Kubernetes objects, a pod the API server refuses). A job with no running attempt fails with
InvalidSpec at once. A running attempt came from a valid generation: an edit that made the spec
invalid only shapes the next attempt, so the pods train on, told by SpecValid False and one event per
generation, and the job fails once the gang would need new pods."""
from __future__ import annotations

import datetime as dt

from ..api import HunyuanFineTune
from ..status import ConditionType, HunyuanFineTuneStatus, Reason
from .conditions import drop_condition, fail, set_condition
from .gang import Event, Plan
from .observe import PodView


def running_attempt(job: HunyuanFineTune, pods: list[PodView]) -> bool:
    return any(p.attempt == job.status.attempt and p.phase in ("Pending", "Running") and not p.deleting
               for p in pods)


def failed(status: HunyuanFineTuneStatus, message: str, now: dt.datetime, generation: int | None,
           reason: str = Reason.INVALID_SPEC) -> HunyuanFineTuneStatus | None:
    """The Failed status to write; None when it says so already."""
    if status.phase == "Failed" and status.message == message:
        return None
    status = status.model_copy(deep=True)
    status.observedGeneration = generation
    fail(status, reason, message, now)
    return status


def edited(job: HunyuanFineTune, plan: Plan, problem: str, now: dt.datetime) -> str | None:
    """A running job's spec was made invalid by an edit: the failure message once the gang needs new
    pods; until then SpecValid False (and an event per generation) is added to the plan."""
    if plan.create or plan.status.attempt != job.status.attempt:
        ended = plan.status.lastFailure
        return f"{problem}; the gang cannot restart on it" + (
            f" after pod {ended.pod} ended ({ended.reason})" if ended and ended.pod else "")
    generation = job.metadata.get("generation")
    set_condition(plan.status.conditions, ConditionType.SPEC_VALID, "False", Reason.INVALID_SPEC,
                  f"{problem}; the running attempt goes on, a restart would fail the job", now, generation)
    said = next((c.observedGeneration for c in job.status.conditions if c.type == ConditionType.SPEC_VALID), None)
    if generation != said:
        plan.events.append(Event("Warning", Reason.INVALID_SPEC, f"generation {generation} is invalid: {problem}; "
                                 "the running pods keep training until they finish or need a restart, which fails "
                                 "the job"))
    return None


def settle(plan: Plan, problem: str | None) -> None:
    """SpecValid goes once the spec is valid again or the attempt finished."""
    if not problem or plan.status.phase in ("Succeeded", "Failed"):
        drop_condition(plan.status, ConditionType.SPEC_VALID)
