"""The gang lifecycle as a pure function, one module per policy:

    plan(job, observed pods, now, scrape, workload) -> next status, pods to delete, ranks to create,
                                                     the Kueue Workload's change, events

Phases: Pending -> Running -> Succeeded (the master exited 0) or Failed; Restarting between attempts;
Suspended; Queued while Kueue has not admitted the job (or evicted it). The status is written BEFORE
pods are deleted or created (the reconciler), so an operator that crashes between two API calls
converges on restart.

A pass: a finished job only ages (ttl); else the first policy that decides ends it, in this order:
suspend, deadline, memory (Enforce), a Kueue eviction (queue), a previous attempt still terminating,
failure (backoff), stall (and start-up), resize (a gang the cluster cannot place shrinks), waiting for
Kueue's admission (queue); else the gang is created and runs (create). Then every pass brings the Kueue
Workload in line (queue), writes the counts and conditions (summary), PreflightPassed (preflight),
MemoryRisk (memory) and the offload decision.
The invalid-spec policy (invalid.py) is applied by the reconciler around this plan.
"""
from __future__ import annotations

import datetime as dt

from .. import builders, sizing
from ..api import HunyuanFineTune
from ..kueue import WorkloadView
from ..progress import SCRAPE_INTERVAL_SECONDS, Scrape
from ..status import TERMINAL_PHASES
from . import create, deadline, failure, memory, preflight, queue, resize, stall, summary, suspend, ttl
from .gang import STALE_REQUEUE, Gang, Plan
from .observe import PodView


def plan(job: HunyuanFineTune, pods: list[PodView], now: dt.datetime, scrape: Scrape | None = None,
         watching: bool = False, workload: WorkloadView | None = None) -> Plan:
    """watching: the operator scrapes this job's master trainer (scrape: the latest answer, if any).
    workload: the job's Kueue Workload, if it has one."""
    gang = Gang(job, pods, now, scrape, watching, workload)
    gang.delete(gang.stale)
    if gang.st.phase in TERMINAL_PHASES:
        ttl.apply(gang)
    elif suspend.apply(gang) or deadline.apply(gang) or memory.refuse(gang) or queue.evict(gang):
        pass
    elif gang.stale:
        gang.plan.requeue_after = STALE_REQUEUE  # the previous gang is still terminating
    elif (not failure.apply(gang) and not stall.apply(gang) and not resize.apply(gang)
          and queue.admitted(gang)):
        create.apply(gang)
    queue.sync(gang)
    if watching and gang.st.phase == "Running":  # each pass reads the master's metrics: status.progress stays fresh
        gang.requeue(SCRAPE_INTERVAL_SECONDS)
    summary.count(gang)
    summary.conditions(gang)
    preflight.condition(gang)
    memory.condition(gang)
    gang.st.offload = sizing.offload_decision(job, builders.spec_config(job, with_arguments=False))[2]
    return gang.plan
