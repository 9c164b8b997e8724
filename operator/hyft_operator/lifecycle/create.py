"""The gang is created and runs: the missing ranks of the attempt are created, and the phase goes
Pending -> Running (every pod runs) -> Succeeded (the master exited 0); a resumed job says Resumed."""
from __future__ import annotations

from ..status import Reason
from .conditions import timestamp
from .gang import STALE_REQUEUE, Event, Gang


def apply(gang: Gang) -> None:
    st, plan = gang.st, gang.plan
    present = {p.rank for p in gang.current}
    plan.create = [r for r in range(gang.total) if r not in present]
    if any(p.deleting for p in gang.current):
        plan.requeue_after = STALE_REQUEUE  # recreate those once they are gone
    retrying = bool(plan.create and gang.creation_failure)
    if plan.create:
        st.startTime = st.startTime or timestamp(gang.now)
    if plan.create and not retrying:  # a retry of a refused creation was announced as a Warning
        plan.events.append(Event("Normal", Reason.PODS_CREATED,
                                 f"creating {len(plan.create)} of {gang.total} pods (attempt {st.attempt})"))
    if gang.current and gang.current[0].rank == 0 and gang.current[0].phase == "Succeeded":
        gang.finish("Succeeded", Reason.COMPLETED, "training finished: the master pod exited 0", "Normal")
        return
    running = sum(p.phase in ("Running", "Succeeded") for p in gang.current)
    if not plan.create and running == gang.total:
        gang.transition("Running", Reason.ALL_PODS_RUNNING, f"all {gang.total} pods running (attempt {st.attempt})")
    elif st.phase == "Restarting":
        pass  # keep saying why until the new gang runs
    elif st.phase == "Suspended":
        gang.transition("Pending", Reason.RESUMED, f"resumed: recreating the pods as attempt {st.attempt}")
    else:
        reason = gang.reason if st.phase == "Pending" and gang.reason else Reason.PODS_STARTING
        message = gang.creation_failure if retrying else f"{running}/{gang.total} pods running"
        # creating pods was announced (PodsCreated); starting them is the same news
        gang.transition("Pending", reason, message, announce=not plan.create)
