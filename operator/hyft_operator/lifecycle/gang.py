"""One planning pass over one job's gang: what was observed, the status being written, and the
plan being made. The policies (one module each) read and change it; none does I/O."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property

from ..admission import MemoryCheck, check_memory
from ..api import HunyuanFineTune
from ..kueue import Action, WorkloadView
from ..progress import Scrape
from ..status import PHASE_CONDITIONS, ConditionType, HunyuanFineTuneStatus, Reason
from .conditions import fail, timestamp
from .observe import PodView

STALE_REQUEUE = 2.0  # seconds: a deleted gang is still terminating, or pods wait to be recreated


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    status: HunyuanFineTuneStatus
    delete: list[str] = field(default_factory=list)
    create: list[int] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    workload: Action | None = None  # the change the job's Kueue Workload needs (lifecycle/queue.py)


class Gang:
    def __init__(self, job: HunyuanFineTune, pods: list[PodView], now: dt.datetime, scrape: Scrape | None,
                 watching: bool, workload: WorkloadView | None = None):
        self.job, self.spec, self.now = job, job.spec, now
        self.scrape, self.watching, self.workload = scrape, watching, workload
        self.old = job.status
        self.st = job.status.model_copy(deep=True)
        self.st.observedGeneration = job.metadata.get("generation")
        self.plan = Plan(status=self.st)
        if self.st.gangNodes and self.st.gangNodes >= self.spec.nodes:  # spec.nodes changed to it or below
            self.st.gangNodes = None
        self.total = self.st.gangNodes or self.spec.nodes
        # A rank beyond the gang's size (the job was resized) is stale like another attempt's pods: deleted,
        # and waited for before the gang is recreated.
        ours = [p for p in pods if p.attempt == self.st.attempt and p.rank < self.total]
        self.current = sorted(ours, key=lambda p: p.rank)
        self.stale = [p for p in pods if p not in ours]
        # The reason of the last transition: the phase's own condition, or Reconciling's while Pending.
        reason_from = self.st.phase if self.st.phase in PHASE_CONDITIONS else ConditionType.RECONCILING
        self.reason = next((c.reason for c in self.st.conditions if c.type == reason_from and c.status == "True"),
                           "")
        # Admission refused a pod on an earlier pass (the reconciler wrote why): the plan keeps saying so
        # while pods are missing, instead of rewriting the status back and forth on every retry.
        self.creation_failure = next((c.message for c in self.st.conditions if c.type == ConditionType.CREATED
                                      and c.status == "False" and c.reason == Reason.POD_CREATION_FAILED), None)

    @cached_property
    def memory(self) -> MemoryCheck | None:
        return check_memory(self.job)

    def transition(self, phase: str, reason: str, message: str, event_type: str = "Normal",
                   announce: bool = True) -> None:
        if announce and (self.st.phase != phase or self.reason != reason):
            self.plan.events.append(Event(event_type, reason, message))
        self.st.phase, self.st.message, self.reason = phase, message, reason

    def finish(self, phase: str, reason: str, message: str, event_type: str) -> None:
        self.transition(phase, reason, message, event_type)
        if phase == "Failed":
            fail(self.st, reason, message, self.now)
        self.st.completionTime = self.st.completionTime or timestamp(self.now)

    def delete(self, pods: list[PodView], only_active: bool = False) -> None:
        for p in pods:
            if p.deleting or (only_active and not p.active) or p.name in self.plan.delete:
                continue
            self.plan.delete.append(p.name)

    def resize(self, nodes: int | None) -> None:
        """The next attempt's size: nodes, or spec.nodes (None)."""
        self.st.gangNodes = nodes if nodes != self.spec.nodes else None
        self.total = nodes or self.spec.nodes

    def requeue(self, seconds: float) -> None:
        current = self.plan.requeue_after
        self.plan.requeue_after = seconds if current is None else min(current, seconds)

    def started(self) -> float | None:
        """When the last of the gang's pods started running; None while any is not running."""
        running = [p.started_at for p in self.current if p.phase == "Running" and p.started_at is not None]
        return max(running) if running and len(running) >= self.total else None

    def current_scrape(self) -> Scrape | None:
        """The master trainer's latest answer, if it came from this gang (not the previous attempt's)."""
        started = self.started()
        if not self.scrape or started is None or self.scrape.at < started:
            return None
        return self.scrape
