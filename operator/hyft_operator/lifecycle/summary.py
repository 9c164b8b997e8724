"""What every pass writes whatever the policies decided: the pod counts, the conditions that follow
the phase, Created and PodsScheduled."""
from __future__ import annotations

from ..status import TERMINAL_PHASES, ConditionType, NodeCounts, Reason
from .conditions import follow_phase, set_condition
from .gang import Event, Gang


def count(gang: Gang) -> None:
    st = gang.st
    gone = st.attempt != gang.old.attempt or st.phase == "Suspended" or st.podsDeletedAfterTtl
    kept = [] if gone else [p for p in gang.current if p.name not in gang.plan.delete]
    st.nodes = NodeCounts(
        total=gang.total,
        created=len(kept) + len(gang.plan.create),
        ready=sum(p.phase == "Running" and p.ready for p in kept),
        succeeded=sum(p.phase == "Succeeded" for p in kept),
        failed=sum(p.phase == "Failed" for p in kept),
    )
    st.readyNodes = f"{st.nodes.ready}/{gang.total}"
    if (prog := st.progress) and prog.totalSteps:
        st.progressSummary = f"{prog.step}/{prog.totalSteps} ({prog.percent:.0f}%)"


def conditions(gang: Gang) -> None:
    st, gen, now, total = gang.st, gang.st.observedGeneration, gang.now, gang.total
    conds = st.conditions
    follow_phase(st, gang.reason, now)
    created = st.nodes.created == total and st.phase != "Suspended"
    if gang.plan.create and gang.creation_failure:
        set_condition(conds, ConditionType.CREATED, "False", Reason.POD_CREATION_FAILED, gang.creation_failure,
                      now, gen)
    else:
        set_condition(conds, ConditionType.CREATED, "True" if created or st.phase in TERMINAL_PHASES else "False",
                      Reason.PODS_CREATED if created else Reason.PODS_NOT_CREATED,
                      f"{st.nodes.created}/{total} pods of attempt {st.attempt} exist", now, gen)
    waiting = [p for p in gang.current if p.unschedulable and p.phase == "Pending" and not p.deleting]
    if waiting:
        msg = f"{waiting[0].name}: {waiting[0].unschedulable}"
        if not any(c.type == ConditionType.PODS_SCHEDULED and c.status == "False" for c in conds):
            gang.plan.events.append(Event("Warning", Reason.UNSCHEDULABLE, msg))
        set_condition(conds, ConditionType.PODS_SCHEDULED, "False", Reason.UNSCHEDULABLE, msg, now, gen)
    elif gang.current or gang.plan.create:
        scheduled = len(gang.current) == total and all(p.scheduled for p in gang.current)
        set_condition(conds, ConditionType.PODS_SCHEDULED, "True" if scheduled else "False",
                      Reason.SCHEDULED if scheduled else Reason.WAITING_FOR_SCHEDULER,
                      "" if scheduled else "not every pod is bound to a node yet", now, gen)
