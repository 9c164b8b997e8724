"""The gang lifecycle as a pure function:

    plan(job, observed pods, now) -> next status, pods to delete, ranks to create, events

Phases: Pending -> Running -> Succeeded (the master exited 0) or Failed.
Any pod failing (or vanishing) restarts the WHOLE gang as attempt+1 — an
all-reduce job cannot take one new member — up to runPolicy.backoffLimit, unless
the failure is permanent. The status is written BEFORE pods are deleted or
created, so an operator that crashes between two API calls converges on restart.

A Running gang whose master trainer makes no step for runPolicy.stallTimeoutSeconds
(in the trainer's own clock), or no first step runPolicy.startupTimeoutSeconds after
it started, is restarted the same way (StallTimeout, StartupTimeout).

PreflightPassed: True once the master trainer's metrics say every rank passed the
preflight; False, with the check's reason, when a pod exits with a preflight code.

Failure classification (documented in the README):
  * exit codes in runPolicy.permanentExitCodes (default 2: the trainer's "invalid
    config or data"; 126/127: command not runnable) -> Failed at once;
  * any other exit code — signals (128+N: 137 SIGKILL/OOM-kill, 143 SIGTERM),
    OOMKilled, crashes (1: torchrun reports a failed worker as 1, e.g. an NCCL
    timeout) — and pod-level failures with no exit code (Evicted, node lost,
    deleted) -> gang restart while restarts < backoffLimit.
"""
from __future__ import annotations

import datetime as dt
import posixpath
import signal
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from hyft_trainer.contract import EXIT_MEANINGS, STOPPED_EARLY, log_file

from . import builders, sizing
from .admission import MemoryCheck, check_memory
from .api import HunyuanFineTune
from .builders import CONTAINER, LABEL_ATTEMPT, LABEL_RANK, pod_name
from .progress import Scrape
from .status import TERMINAL_PHASES, Condition, FailureInfo, HunyuanFineTuneStatus, NodeCounts

PHASE_CONDITIONS = ("Running", "Restarting", "Succeeded", "Failed", "Suspended")
STALE_REQUEUE = 2.0
CREATION_FAILED = "PodCreationFailed"  # the Created condition's reason when admission refused a pod
PREFLIGHT = "PreflightPassed"
SPEC_VALID = "SpecValid"  # False only while a running attempt outlives an invalid edit (the reconciler's)


@dataclass(frozen=True)
class PodView:
    """What the lifecycle needs to know about one pod."""

    name: str
    rank: int
    attempt: int
    phase: str = "Pending"
    uid: str = ""  # deletes carry it as a precondition: pod names repeat across attempts
    ready: bool = False
    deleting: bool = False
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    unschedulable: str = ""
    scheduled: bool = False
    started_at: float | None = None  # when its trainer container started running (unix time)

    @property
    def active(self) -> bool:
        return self.phase in ("Pending", "Running", "Unknown") and not self.deleting


def pod_view(pod: dict[str, Any]) -> PodView:
    meta, status = pod.get("metadata", {}), pod.get("status") or {}
    labels = meta.get("labels") or {}
    terminated, running = {}, {}
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") == CONTAINER:
            terminated = (cs.get("state") or {}).get("terminated") or {}
            running = (cs.get("state") or {}).get("running") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    scheduled = conditions.get("PodScheduled", {})
    unschedulable = scheduled.get("message", "") if scheduled.get("reason") == "Unschedulable" else ""
    return PodView(
        name=meta["name"],
        uid=meta.get("uid", ""),
        rank=int(labels.get(LABEL_RANK, -1)),
        attempt=int(labels.get(LABEL_ATTEMPT, -1)),
        phase=status.get("phase") or "Pending",
        ready=conditions.get("Ready", {}).get("status") == "True",
        deleting=bool(meta.get("deletionTimestamp")),
        exit_code=terminated.get("exitCode"),
        reason=terminated.get("reason") or status.get("reason") or "",
        message=(terminated.get("message") or status.get("message") or "").strip()[-500:],
        unschedulable=unschedulable,
        scheduled=bool((pod.get("spec") or {}).get("nodeName")) or scheduled.get("status") == "True",
        started_at=started.timestamp() if (started := _parse(running.get("startedAt"))) else None,
    )


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


def describe_exit(code: int | None, reason: str) -> str:
    if code is None:
        return reason or "failed"
    text = f"exit code {code}"
    if code in EXIT_MEANINGS:
        text += f" ({EXIT_MEANINGS[code].text})"
    if code > 128:
        try:
            text += f" ({signal.Signals(code - 128).name})"
        except ValueError:
            pass
    if reason and reason not in ("Error", "Completed"):
        text += f", {reason}"
    return text


def classify(pod: PodView, permanent_exit_codes: list[int]) -> FailureInfo:
    retryable = pod.exit_code is None or pod.exit_code not in permanent_exit_codes
    return FailureInfo(pod=pod.name, exitCode=pod.exit_code, reason=pod.reason, message=pod.message,
                       retryable=retryable)


def _timestamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(ts: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")) if ts else None


def set_condition(conditions: list[Condition], type_: str, status: str, reason: str, message: str,
                  now: dt.datetime, generation: int | None) -> None:
    """Upsert one condition; lastTransitionTime moves only when its status changes."""
    for cond in conditions:
        if cond.type == type_:
            if cond.status != status:
                cond.lastTransitionTime = _timestamp(now)
            cond.status, cond.reason, cond.message, cond.observedGeneration = status, reason, message, generation
            return
    conditions.append(Condition(type=type_, status=status, reason=reason, message=message,
                                lastTransitionTime=_timestamp(now), observedGeneration=generation))


class _Planner:
    def __init__(self, job: HunyuanFineTune, pods: list[PodView], now: dt.datetime, scrape: Scrape | None,
                 watching: bool):
        self.job, self.spec, self.now = job, job.spec, now
        self.scrape, self.watching = scrape, watching
        self.old = job.status
        self.st = job.status.model_copy(deep=True)
        self.st.observedGeneration = job.metadata.get("generation")
        self.plan = Plan(status=self.st)
        self.total = self.spec.nodes
        self.current = sorted((p for p in pods if p.attempt == self.st.attempt), key=lambda p: p.rank)
        self.stale = [p for p in pods if p.attempt != self.st.attempt]
        # The reason of the last transition: the phase's own condition, or Reconciling's while Pending.
        reason_from = self.st.phase if self.st.phase in PHASE_CONDITIONS else "Reconciling"
        self.reason = next((c.reason for c in self.st.conditions if c.type == reason_from and c.status == "True"),
                           "")
        # Admission refused a pod on an earlier pass (the reconciler wrote why): the plan keeps saying so
        # while pods are missing, instead of rewriting the status back and forth on every retry.
        self.creation_failure = next((c.message for c in self.st.conditions if c.type == "Created"
                                      and c.status == "False" and c.reason == CREATION_FAILED), None)

    @cached_property
    def memory(self) -> MemoryCheck | None:
        return check_memory(self.job)

    # -- helpers -------------------------------------------------------------
    def transition(self, phase: str, reason: str, message: str, event_type: str = "Normal",
                   announce: bool = True) -> None:
        if announce and (self.st.phase != phase or self.reason != reason):
            self.plan.events.append(Event(event_type, reason, message))
        self.st.phase, self.st.message, self.reason = phase, message, reason

    def delete(self, pods: list[PodView], only_active: bool = False) -> None:
        for p in pods:
            if p.deleting or (only_active and not p.active) or p.name in self.plan.delete:
                continue
            self.plan.delete.append(p.name)

    def finish(self, phase: str, reason: str, message: str, event_type: str) -> None:
        self.transition(phase, reason, message, event_type)
        self.st.completionTime = self.st.completionTime or _timestamp(self.now)

    # -- the decision --------------------------------------------------------
    def run(self) -> Plan:
        self.delete(self.stale)
        if self.st.phase in TERMINAL_PHASES:
            self.finished()
        elif self.spec.runPolicy.suspend:
            self.suspend()
        elif self.deadline_exceeded():
            pass
        elif self.memory_refused():
            pass
        elif self.stale:
            self.plan.requeue_after = STALE_REQUEUE  # the previous gang is still terminating
        elif not self.failed() and not self.stalled():
            self.progress()
        self.count()
        self.conditions()
        self.preflight_condition()
        self.memory_condition()
        self.st.offload = sizing.offload_decision(self.job, builders.spec_config(self.job))[2]
        return self.plan

    def finished(self) -> None:
        if self.st.phase == "Failed":
            self.delete(self.current, only_active=True)
        ttl = self.spec.runPolicy.ttlSecondsAfterFinished
        done = _parse(self.st.completionTime)
        if ttl is None or done is None or self.st.podsDeletedAfterTtl:
            return
        remaining = (done + dt.timedelta(seconds=ttl) - self.now).total_seconds()
        if remaining > 0:
            self.plan.requeue_after = remaining
            return
        self.delete(self.current)
        self.st.podsDeletedAfterTtl = True
        self.plan.events.append(Event("Normal", "PodsDeleted",
                                      f"deleted the pods {ttl}s after the job finished (ttlSecondsAfterFinished)"))

    def suspend(self) -> None:
        self.delete(self.current)
        self.st.nodes = NodeCounts(total=self.total)
        self.transition("Suspended", "Suspended",
                        "suspended: pods deleted (checkpoint saved on SIGTERM); set spec.runPolicy.suspend "
                        "to false to resume")

    def memory_refused(self) -> bool:
        """runPolicy.memoryCheck Enforce: a job whose pods would not hold its model states never starts."""
        if self.spec.runPolicy.memoryCheck != "Enforce" or self.st.startTime or self.current:
            return False
        check = self.memory
        if check is None or not check.at_risk:
            return False
        self.finish("Failed", "MemoryRisk", f"not started: {check.message} (runPolicy.memoryCheck: Enforce)",
                    "Warning")
        return True

    def memory_condition(self) -> None:
        if self.spec.runPolicy.memoryCheck == "Off":
            return
        check = self.memory
        if check is None:
            status, reason = "Unknown", "ModelSizeUnknown"
            message = "the model's size is neither in spec.model.parameters nor in its path's name"
        else:
            status, reason = ("True", "NeedsMoreMemory") if check.at_risk else ("False", "Fits")
            message = check.message
        before = next((c.status for c in self.st.conditions if c.type == "MemoryRisk"), None)
        if status == "True" and before != "True" and self.st.phase != "Failed":
            self.plan.events.append(Event("Warning", "MemoryRisk", message))
        set_condition(self.st.conditions, "MemoryRisk", status, reason, message, self.now, self.st.observedGeneration)

    def deadline_exceeded(self) -> bool:
        deadline, start = self.spec.runPolicy.activeDeadlineSeconds, _parse(self.st.startTime)
        if deadline is None or start is None:
            return False
        remaining = (start + dt.timedelta(seconds=deadline) - self.now).total_seconds()
        if remaining > 0:
            self.plan.requeue_after = remaining
            return False
        self.delete(self.current, only_active=True)
        self.finish("Failed", "DeadlineExceeded",
                    f"activeDeadlineSeconds ({deadline}s) exceeded since the job started", "Warning")
        return True

    def failed(self) -> bool:
        """Handle the first failed or vanished pod of the current gang; True if one was found."""
        failure = None
        for p in self.current:
            if p.phase == "Failed" and not p.deleting:  # pods we deleted (suspend) fail on SIGTERM
                failure = classify(p, self.spec.runPolicy.permanentExitCodes)
                break
            if p.phase == "Succeeded" and p.message.startswith(STOPPED_EARLY) and not p.deleting:
                # preempted or drained: the trainer saved a checkpoint and exited 0 without finishing
                failure = FailureInfo(pod=p.name, exitCode=0, reason="Interrupted", message=p.message,
                                      retryable=True)
                break
        # Once the whole gang ran, a missing pod was deleted, preempted or lost with its node.
        if failure is None and self.old.phase == "Running":
            present = {p.rank for p in self.current}
            lost = [r for r in range(self.total) if r not in present]
            if lost:
                failure = FailureInfo(pod=pod_name(self.job.metadata["name"], lost[0]), reason="PodDeleted",
                                      message="the pod disappeared (deleted, preempted or its node was lost)",
                                      retryable=True)
        if failure is None:
            return False
        what = f"pod {failure.pod} failed ({describe_exit(failure.exitCode, failure.reason)})"
        if failure.message:
            what += f": {failure.message.splitlines()[-1][:200]}"
        if (meaning := EXIT_MEANINGS.get(failure.exitCode)) and meaning.preflight_reason:
            set_condition(self.st.conditions, PREFLIGHT, "False", meaning.preflight_reason,
                          f"attempt {self.st.attempt}: {what}", self.now, self.st.observedGeneration)
        self.restart_or_fail(failure, what)
        return True

    def stalled(self) -> bool:
        """A Running gang whose master trainer stopped stepping (or never started): restart it."""
        policy = self.spec.runPolicy
        stall, startup = policy.stallTimeoutSeconds, policy.startupTimeoutSeconds
        gang_started = self.gang_started()
        if not self.watching or not (stall or startup) or self.st.phase != "Running" or gang_started is None:
            return False
        # the trainer's clock, from a scrape of this gang's master (not the previous attempt's)
        clock = scrape.clock if (scrape := self.current_scrape()) else None
        if clock is not None and clock.last_step is not None:
            limit, idle = stall, clock.idle_seconds
            reason, why = "StallTimeout", f"the master trainer made no step for {idle:.0f}s (last step {clock.step})"
        else:
            limit = startup
            idle = clock.idle_seconds if clock else self.now.timestamp() - gang_started
            reason, why = "StartupTimeout", (f"the master trainer made no first step {idle:.0f}s after it started"
                                             + ("" if clock else " (its metrics never answered)"))
        if not limit:
            return False
        if idle <= limit:
            self.requeue(max(1.0, limit - idle))
            return False
        setting = "stallTimeoutSeconds" if reason == "StallTimeout" else "startupTimeoutSeconds"
        why += f"; runPolicy.{setting} is {limit}s"
        self.restart_or_fail(FailureInfo(pod=pod_name(self.job.metadata["name"], 0), reason=reason, message=why,
                                         retryable=True), why, reason)
        return True

    def gang_started(self) -> float | None:
        """When the last of the gang's pods started running; None while any is not running."""
        running = [p.started_at for p in self.current if p.phase == "Running" and p.started_at is not None]
        return max(running) if running and len(running) >= self.total else None

    def current_scrape(self) -> Scrape | None:
        """The master trainer's latest answer, if it came from this gang (not the previous attempt's)."""
        gang_started = self.gang_started()
        if not self.scrape or gang_started is None or self.scrape.at < gang_started:
            return None
        return self.scrape

    def requeue(self, seconds: float) -> None:
        current = self.plan.requeue_after
        self.plan.requeue_after = seconds if current is None else min(current, seconds)

    def restart_or_fail(self, failure: FailureInfo, what: str, restart_reason: str = "GangRestart") -> None:
        self.st.lastFailure = failure
        output = self.spec.output  # the pod's log outlives it there (the trainer's launcher writes it)
        what += (f"; its log: {posixpath.join(output.path, log_file(self.st.attempt, failure.pod))} "
                 f"on volume {output.volume}")
        limit = self.spec.runPolicy.backoffLimit
        self.delete(self.current, only_active=True)
        if not failure.retryable:
            self.finish("Failed", "PermanentError", f"{what}; exit code {failure.exitCode} is permanent "
                        "(runPolicy.permanentExitCodes), not restarting", "Warning")
        elif self.st.restarts >= limit:
            self.finish("Failed", "BackoffLimitExceeded",
                        f"{what}; backoff limit {limit} reached after {self.st.restarts} gang restarts", "Warning")
        else:
            self.delete(self.current)
            self.st.restarts += 1
            self.st.attempt += 1
            self.st.nodes = NodeCounts(total=self.total)
            self.transition("Restarting", restart_reason,
                            f"{what}; restarting all {self.total} pods as attempt {self.st.attempt} "
                            f"(restart {self.st.restarts}/{limit}), resuming from the last checkpoint", "Warning")
            self.plan.requeue_after = STALE_REQUEUE
        return True

    def progress(self) -> None:
        present = {p.rank for p in self.current}
        self.plan.create = [r for r in range(self.total) if r not in present]
        if any(p.deleting for p in self.current):
            self.plan.requeue_after = STALE_REQUEUE  # recreate those once they are gone
        retrying = bool(self.plan.create and self.creation_failure)
        if self.plan.create:
            self.st.startTime = self.st.startTime or _timestamp(self.now)
        if self.plan.create and not retrying:  # a retry of a refused creation was announced as a Warning
            self.plan.events.append(Event("Normal", "PodsCreated", f"creating {len(self.plan.create)} of "
                                                                   f"{self.total} pods (attempt {self.st.attempt})"))
        if self.current and self.current[0].rank == 0 and self.current[0].phase == "Succeeded":
            self.finish("Succeeded", "Completed", "training finished: the master pod exited 0", "Normal")
            return
        running = sum(p.phase in ("Running", "Succeeded") for p in self.current)
        if not self.plan.create and running == self.total:
            self.transition("Running", "AllPodsRunning", f"all {self.total} pods running (attempt {self.st.attempt})")
        elif self.st.phase == "Restarting":
            pass  # keep saying why until the new gang runs
        elif self.st.phase == "Suspended":
            self.transition("Pending", "Resumed", f"resumed: recreating the pods as attempt {self.st.attempt}")
        else:
            reason = self.reason if self.st.phase == "Pending" and self.reason else "PodsStarting"
            message = self.creation_failure if retrying else f"{running}/{self.total} pods running"
            # creating pods was announced (PodsCreated); starting them is the same news
            self.transition("Pending", reason, message, announce=not self.plan.create)

    def preflight_condition(self) -> None:
        """PreflightPassed: True once the master trainer reports that every rank passed (from the
        scrape), False with the check's reason when a pod exits with a preflight code (failed()),
        Unknown while a new gang has not reported yet."""
        before = next((c for c in self.st.conditions if c.type == PREFLIGHT), None)
        passed = (scrape := self.current_scrape()) and scrape.preflight_seconds is not None
        if passed:
            message = (f"attempt {self.st.attempt}: every rank passed in {scrape.preflight_seconds:.1f}s "
                       "(/dev/shm, output volume writable, shared and with room for a checkpoint, master "
                       "reachable, an all-reduce across all ranks)")
            set_condition(self.st.conditions, PREFLIGHT, "True", "Passed", message, self.now,
                          self.st.observedGeneration)
        elif self.watching and self.st.phase in ("Pending", "Running", "Restarting") and (
                before is None or before.status == "True" and self.st.attempt != self.old.attempt):
            set_condition(self.st.conditions, PREFLIGHT, "Unknown", "Checking",
                          f"attempt {self.st.attempt}: the master trainer has not reported a passed preflight yet",
                          self.now, self.st.observedGeneration)

    def count(self) -> None:
        gone = self.st.attempt != self.old.attempt or self.st.phase == "Suspended" or self.st.podsDeletedAfterTtl
        kept = [] if gone else [p for p in self.current if p.name not in self.plan.delete]
        self.st.nodes = NodeCounts(
            total=self.total,
            created=len(kept) + len(self.plan.create),
            ready=sum(p.phase == "Running" and p.ready for p in kept),
            succeeded=sum(p.phase == "Succeeded" for p in kept),
            failed=sum(p.phase == "Failed" for p in kept),
        )
        self.st.readyNodes = f"{self.st.nodes.ready}/{self.total}"
        prog = self.st.progress
        if prog and prog.totalSteps:
            self.st.progressSummary = f"{prog.step}/{prog.totalSteps} ({prog.percent:.0f}%)"

    def conditions(self) -> None:
        st, gen, now = self.st, self.st.observedGeneration, self.now
        conds = st.conditions
        for type_ in PHASE_CONDITIONS:
            active = st.phase == type_
            set_condition(conds, type_, "True" if active else "False", self.reason if active else f"Not{type_}",
                          st.message if active else "", now, gen)
        created = st.nodes.created == self.total and st.phase not in ("Suspended",)
        if self.plan.create and self.creation_failure:
            set_condition(conds, "Created", "False", CREATION_FAILED, self.creation_failure, now, gen)
        else:
            set_condition(conds, "Created", "True" if created or st.phase in TERMINAL_PHASES else "False",
                          "PodsCreated" if created else "PodsNotCreated",
                          f"{st.nodes.created}/{self.total} pods of attempt {st.attempt} exist", now, gen)
        waiting = [p for p in self.current if p.unschedulable and p.phase == "Pending" and not p.deleting]
        if waiting:
            msg = f"{waiting[0].name}: {waiting[0].unschedulable}"
            if not any(c.type == "PodsScheduled" and c.status == "False" for c in conds):
                self.plan.events.append(Event("Warning", "Unschedulable", msg))
            set_condition(conds, "PodsScheduled", "False", "Unschedulable", msg, now, gen)
        elif self.current or self.plan.create:
            scheduled = len(self.current) == self.total and all(p.scheduled for p in self.current)
            set_condition(conds, "PodsScheduled", "True" if scheduled else "False",
                          "Scheduled" if scheduled else "WaitingForScheduler",
                          "" if scheduled else "not every pod is bound to a node yet", now, gen)
        in_progress = st.phase in ("Pending", "Running", "Restarting")
        set_condition(conds, "Reconciling", "True" if in_progress else "False",
                      self.reason if in_progress else "Idle", st.message if in_progress else "", now, gen)
        set_condition(conds, "Stalled", "True" if st.phase == "Failed" else "False",
                      self.reason if st.phase == "Failed" else "NotStalled",
                      st.message if st.phase == "Failed" else "", now, gen)
        set_condition(conds, "Ready", "True" if st.phase == "Succeeded" else "False",
                      "Succeeded" if st.phase == "Succeeded" else st.phase, st.message, now, gen)


def plan(job: HunyuanFineTune, pods: list[PodView], now: dt.datetime, scrape: Scrape | None = None,
         watching: bool = False) -> Plan:
    """watching: the operator scrapes this job's master trainer (scrape: the latest answer, if any)."""
    return _Planner(job, pods, now, scrape, watching).run()
