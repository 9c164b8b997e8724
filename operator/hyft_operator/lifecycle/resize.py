"""runPolicy.resize: a gang a pod of which stays unschedulable for unschedulableSeconds (capacity lost, a
node gone) restarts as the next attempt on the nodes the scheduler did place, down to minNodes, resuming
from the last checkpoint; not a failure (backoffLimit untouched). The size keeps the global batch: the
trainer raises gradient accumulation by spec.nodes / size, so the size must divide spec.nodes x
gradientAccumulationSteps. The next restart for any other reason tries spec.nodes again (failure.py,
suspend.py reset the size), and so does growBackAfterSeconds: once the shrunk gang has run that long it
stops (the trainer checkpoints on SIGTERM) and restarts on spec.nodes, shrinking again if the nodes are
still missing."""
from __future__ import annotations

from ..status import NodeCounts, Reason
from .gang import STALE_REQUEUE, Gang


def fitting_size(placed: int, total: int, planned: int, accumulation: int, minimum: int) -> int | None:
    """The largest size below total, at most the pods placed and at least minimum, on which the planned
    global batch (planned nodes x accumulation micro-batches per GPU) divides evenly; None if there is none."""
    return next((n for n in range(min(placed, total - 1), minimum - 1, -1) if planned * accumulation % n == 0),
                None)


def apply(gang: Gang) -> bool:
    return shrink(gang) or grow_back(gang)


def shrink(gang: Gang) -> bool:
    policy = gang.spec.runPolicy.resize
    if policy is None or gang.st.phase not in ("Pending", "Restarting"):
        return False
    waiting = [p.unschedulable_since for p in gang.current
               if p.phase == "Pending" and p.unschedulable and p.unschedulable_since and not p.deleting]
    if not waiting:
        return False
    due = min(waiting) + policy.unschedulableSeconds - gang.now.timestamp()
    if due > 0:
        gang.requeue(due)
        return False
    placed = sum(p.scheduled and not p.deleting for p in gang.current)
    size = fitting_size(placed, gang.total, gang.spec.nodes, gang.spec.training.gradientAccumulationSteps,
                        policy.minNodes)
    if size is None:
        return False  # stays Pending; PodsScheduled says why
    before = gang.total
    _restart_on(gang, size)
    gang.transition("Restarting", Reason.RESIZED,
                    f"a pod stayed unschedulable for {policy.unschedulableSeconds}s: restarting on {size} of "
                    f"{before} nodes (runPolicy.resize) as attempt {gang.st.attempt}, resuming from the last "
                    f"checkpoint with the global batch kept", "Warning")
    return True


def grow_back(gang: Gang) -> bool:
    policy = gang.spec.runPolicy.resize
    if (policy is None or policy.growBackAfterSeconds is None or gang.st.phase != "Running"
            or gang.total >= gang.spec.nodes):
        return False
    started = gang.started()
    if started is None:
        return False
    due = started + policy.growBackAfterSeconds - gang.now.timestamp()
    if due > 0:
        gang.requeue(due)
        return False
    before = gang.total
    _restart_on(gang, None)
    gang.transition("Restarting", Reason.GROWING_BACK,
                    f"ran {policy.growBackAfterSeconds}s on {before} of {gang.total} nodes: the pods stop with a "
                    f"checkpoint and attempt {gang.st.attempt} resumes from it on all {gang.total} nodes "
                    f"(runPolicy.resize.growBackAfterSeconds); if nodes are still missing, the gang shrinks again "
                    f"after {policy.unschedulableSeconds}s")
    return True


def _restart_on(gang: Gang, size: int | None) -> None:
    """The gang stops (its pods checkpoint on SIGTERM) and the next attempt runs on size (None: spec.nodes)."""
    gang.delete(gang.current)
    gang.st.attempt += 1
    gang.resize(size)
    gang.st.nodes = NodeCounts(total=gang.total)
    gang.plan.requeue_after = STALE_REQUEUE
