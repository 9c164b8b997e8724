"""spec.scheduling.queueName: the gang runs only while Kueue admits its Workload (kueue.py).

Queued: no Workload yet, or Kueue has not admitted it (the status says Kueue's reason, and the place
in line where Kueue's visibility API gives it). Evicted
(preempted, deactivated, a stopped queue): the pods are deleted (the trainer checkpoints on SIGTERM), the
next attempt waits Queued and resumes from that checkpoint once admitted again; a disruption, not
counted against backoffLimit. Every pass then brings the Workload in line (sync): created, its
spec.active following runPolicy.suspend, its quota released once an evicted gang's pods are gone,
recreated when the gang's size changed, PodsReady once the gang runs, Finished with the job."""
from __future__ import annotations

from ..kueue import Action
from ..status import TERMINAL_PHASES, Reason
from .gang import Gang


def evict(gang: Gang) -> bool:
    workload = gang.workload
    if not gang.spec.scheduling.queueName or workload is None or not (workload.evicted and workload.reserved):
        return False
    reason, message = workload.evicted
    if gang.current:  # the admitted attempt's pods: stopped, and the next attempt waits for admission
        gang.delete(gang.current)
        gang.st.attempt += 1
        gang.st.disruptions += 1
        gang.resize(None)
    gang.transition("Queued", Reason.EVICTED,
                    f"Kueue evicted the workload ({reason}: {message}): the pods stop with a checkpoint, and attempt "
                    f"{gang.st.attempt} resumes from it once Kueue admits the job again", "Warning")
    return True


def admitted(gang: Gang) -> bool:
    """Whether the gang may run: no queue, or Kueue admitted its Workload as it is."""
    queue, workload = gang.spec.scheduling.queueName, gang.workload
    if not queue:
        return True
    if workload and workload.admitted and not workload.evicted and workload.nodes == gang.total:
        return True
    why = workload.pending if workload and workload.pending else "not admitted yet"
    if workload and workload.evicted:  # Kueue keeps Evicted until it admits the Workload again
        gang.transition("Queued", Reason.EVICTED, f"evicted by Kueue ({workload.evicted[0]}), waiting to be "
                        f"admitted again (LocalQueue {queue}): {why}", announce=gang.st.phase != "Queued")
    else:
        place = workload.position if workload else None
        where = f"LocalQueue {queue}" + (f", number {place.local} there and {place.cluster} in its ClusterQueue"
                                         if place else "")
        gang.transition("Queued", Reason.QUEUED, f"waiting for Kueue ({where}): {why}",
                        announce=gang.st.phase != "Queued")
    return False


def sync(gang: Gang) -> None:
    """The one change the Workload needs now, if any (gang.plan.workload)."""
    workload = gang.workload
    if not gang.spec.scheduling.queueName:
        return
    if gang.st.phase in TERMINAL_PHASES:
        if workload and not workload.finished:
            gang.plan.workload = Action.FINISH
        return
    if workload is None:
        gang.plan.workload = Action.CREATE
        return
    if workload.active == gang.spec.runPolicy.suspend:
        gang.plan.workload = Action.DEACTIVATE if gang.spec.runPolicy.suspend else Action.ACTIVATE
        return
    stopped = not gang.current and not gang.stale  # every pod of the gang is gone
    resized = workload.nodes != gang.total
    if workload.reserved and (workload.evicted or resized) and stopped:
        gang.plan.workload = Action.RELEASE
    elif resized and not workload.reserved:
        gang.plan.workload = Action.DELETE
    elif workload.admitted and gang.st.phase == "Running" and not workload.pods_ready:
        gang.plan.workload = Action.PODS_READY
