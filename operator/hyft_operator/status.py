"""HunyuanFineTune's status (written by the operator only), its phases, and every condition
type and reason it sets: each declared once here, listed in the CRD's docs."""
from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from .markers import ApiModel

Phase = Literal["Pending", "Queued", "Running", "Restarting", "Succeeded", "Failed", "Suspended"]
PHASES: tuple[str, ...] = Phase.__args__
IN_PROGRESS_PHASES = ("Pending", "Queued", "Running", "Restarting")
TERMINAL_PHASES = ("Succeeded", "Failed")
# Phases in which no pod of the current attempt exists (the status is written before pods are created):
# nodes and gpusPerNode may change then (api.RESIZE_BETWEEN_ATTEMPTS), as while suspended.
RESIZABLE_PHASES = ("Queued", "Restarting")


class _Documented(StrEnum):
    """A string constant with its meaning, for the CRD's docs and the reference."""

    def __new__(cls, value: str, meaning: str) -> _Documented:
        member = str.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member


class ConditionType(_Documented):
    READY = "Ready", "True once the job succeeded (kstatus); its reason is the phase otherwise"
    RECONCILING = "Reconciling", "True while the job is Pending, Queued, Running or Restarting (kstatus)"
    STALLED = "Stalled", "True once the job failed (kstatus)"
    CREATED = "Created", "every pod of the current attempt exists"
    PODS_SCHEDULED = "PodsScheduled", "every pod of the current attempt is bound to a node"
    QUEUED = "Queued", "the phase is Queued: Kueue has not admitted the job (spec.scheduling.queueName)"
    RUNNING = "Running", "the phase is Running (likewise for each phase)"
    RESTARTING = "Restarting", "the phase is Restarting"
    SUCCEEDED = "Succeeded", "the phase is Succeeded"
    FAILED = "Failed", "the phase is Failed"
    SUSPENDED = "Suspended", "the phase is Suspended"
    MEMORY_RISK = "MemoryRisk", "the pods' memory is below the estimated need (runPolicy.memoryCheck)"
    PREFLIGHT_PASSED = "PreflightPassed", "every rank of the attempt passed the trainer's preflight"
    SPEC_VALID = "SpecValid", "False only while a running attempt outlives an edit that made the spec invalid"


PHASE_CONDITIONS = (ConditionType.QUEUED, ConditionType.RUNNING, ConditionType.RESTARTING, ConditionType.SUCCEEDED,
                    ConditionType.FAILED, ConditionType.SUSPENDED)


class Reason(_Documented):
    """Every reason the operator writes on a condition or an event (besides Not<Phase> on a phase condition
    that is False, and the preflight reasons of the trainer's exit codes)."""

    PODS_CREATED = "PodsCreated", "the pods of an attempt were created"
    PODS_NOT_CREATED = "PodsNotCreated", "some pods of the attempt do not exist yet"
    POD_CREATION_FAILED = "PodCreationFailed", "admission refused a pod (quota, policy); retried"
    PODS_STARTING = "PodsStarting", "the gang's pods are starting"
    ALL_PODS_RUNNING = "AllPodsRunning", "every pod of the attempt runs"
    RESUMED = "Resumed", "runPolicy.suspend was cleared: the gang is recreated"
    SUSPENDED = "Suspended", "runPolicy.suspend: the pods were deleted"
    COMPLETED = "Completed", "the master pod exited 0"
    GANG_RESTART = "GangRestart", "a pod failed or vanished: the whole gang restarts as the next attempt"
    STALL_TIMEOUT = "StallTimeout", "the master trainer made no step for runPolicy.stallTimeoutSeconds"
    STARTUP_TIMEOUT = "StartupTimeout", "no first step runPolicy.startupTimeoutSeconds after the gang started"
    PERMANENT_ERROR = "PermanentError", "a pod exited with one of runPolicy.permanentExitCodes"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded", "a pod failed after runPolicy.backoffLimit gang restarts"
    DEADLINE_EXCEEDED = "DeadlineExceeded", "runPolicy.activeDeadlineSeconds passed since the job started"
    PODS_DELETED = "PodsDeleted", "runPolicy.ttlSecondsAfterFinished deleted a finished job's pods"
    MEMORY_RISK = "MemoryRisk", "memoryCheck Enforce refused to start a job whose pods lack memory"
    NEEDS_MORE_MEMORY = "NeedsMoreMemory", "the pods' memory is below the estimate"
    FITS = "Fits", "the pods' memory holds the estimate"
    MODEL_SIZE_UNKNOWN = "ModelSizeUnknown", "no model size to estimate from"
    UNSCHEDULABLE = "Unschedulable", "the scheduler cannot place a pod (its message says why)"
    SCHEDULED = "Scheduled", "every pod is bound to a node"
    WAITING_FOR_SCHEDULER = "WaitingForScheduler", "not every pod is bound to a node yet"
    IDLE = "Idle", "Reconciling is False: the job has finished or is suspended"
    NOT_STALLED = "NotStalled", "Stalled is False"
    PASSED = "Passed", "every rank passed the preflight"
    CHECKING = "Checking", "the attempt's master trainer has not reported its preflight yet"
    INVALID_SPEC = "InvalidSpec", "the spec is refused (the message names the field)"
    OUTPUT_NOT_SHARED = "OutputNotShared", "a multi-node job's output volume is not shared by every node"
    DISRUPTED = "Disrupted", ("a pod was preempted, evicted or drained (its DisruptionTarget condition), or the "
                              "trainer stopped early on SIGTERM with a checkpoint: the gang restarts from it as the "
                              "next attempt, not counted against runPolicy.backoffLimit")
    RESIZED = "Resized", ("runPolicy.resize: a pod stayed unschedulable for unschedulableSeconds: the gang restarts on "
                          "the nodes the scheduler placed (status.gangNodes), not counted against backoffLimit")
    GROWING_BACK = "GrowingBack", ("runPolicy.resize.growBackAfterSeconds: a shrunk gang ran that long: it stops with "
                                   "a checkpoint and restarts on spec.nodes, not counted against backoffLimit")
    QUEUED = "Queued", "spec.scheduling.queueName: waiting for Kueue to admit the job's Workload (its reason said)"
    EVICTED = "Evicted", ("Kueue evicted the job's Workload (preempted, deactivated, a stopped queue): the pods stop "
                          "with a checkpoint and the job waits Queued to resume from it, not counted against "
                          "backoffLimit")
    POD_DELETED = "PodDeleted", "lastFailure: a running pod disappeared (deleted, preempted, node lost)"


class Condition(ApiModel):
    type: str = Field(description="Condition type: one of " + ", ".join(ConditionType) + ".")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field("", description="CamelCase reason for the last transition: Not<Type> on a phase "
                        "condition that is False, a preflight check's name on PreflightPassed, or one of "
                        + ", ".join(Reason) + ".")
    message: str = Field("", description="Human-readable detail.")
    lastTransitionTime: str | None = Field(None,
                                           description="When status last changed (RFC 3339).")
    observedGeneration: int | None = Field(None,
                                           description="The .metadata.generation this condition was set for.")


class NodeCounts(ApiModel):
    total: int = Field(0, description="Pods in the gang.")
    created: int = Field(0, description="Pods of the current attempt that exist.")
    ready: int = Field(0, description="Pods running and ready.")
    succeeded: int = Field(0, description="Pods that exited 0.")
    failed: int = Field(0, description="Pods that failed.")


class FailureInfo(ApiModel):
    pod: str = Field(description="The pod that failed first.")
    exitCode: int | None = Field(None, description="Its trainer container's exit code.")
    reason: str = Field("", description="Kubernetes reason (Error, OOMKilled, Evicted, ...).")
    message: str = Field("", description="Termination message, if any.")
    retryable: bool = Field(description="Whether the gang was (or would be) restarted for it.")


class Progress(ApiModel):
    step: int = Field(0, description="Optimizer steps done.")
    totalSteps: int = Field(0, description="Planned optimizer steps.")
    percent: float = Field(0, description="step / totalSteps in percent.")
    loss: float | None = Field(None, description="Last logged training loss.")
    tokensPerSecond: float | None = Field(None, description="Training throughput.")
    etaSeconds: float | None = Field(None, description="Estimated seconds to finish.")
    lastCheckpointStep: int | None = Field(None,
                                           description="Step of the newest complete checkpoint.")


class HunyuanFineTuneStatus(ApiModel):
    observedGeneration: int | None = Field(None,
                                           description="The .metadata.generation last reconciled.")
    phase: Phase = Field("Pending", description="Pending, Queued, Running, Restarting, Succeeded, Failed or "
                                                "Suspended.")
    conditions: list[Condition] = Field(default_factory=list, description="Conditions, one per type.")
    attempt: int = Field(0, description="Current gang attempt (pods carry it as hyft.io/attempt).")
    restarts: int = Field(0, description="Gang restarts after failures (counted against runPolicy.backoffLimit).")
    disruptions: int = Field(0, description="Gang restarts after disruptions: preemption (by the scheduler or "
                                            "Kueue), eviction, a node drain (not counted against "
                                            "runPolicy.backoffLimit).")
    gangNodes: int | None = Field(None, description="Nodes the current attempt runs on, when runPolicy.resize shrank "
                                                  "it below spec.nodes (unset: spec.nodes).")
    nodes: NodeCounts = Field(default_factory=NodeCounts, description="Pod counts of the current attempt.")
    readyNodes: str = Field("0/0", description="ready/total, for kubectl get.")
    startTime: str | None = Field(None, description="When the first gang was created.")
    completionTime: str | None = Field(None, description="When the job finished.")
    podsDeletedAfterTtl: bool = Field(False,
                                      description="Pods removed by ttlSecondsAfterFinished.")
    lastFailure: FailureInfo | None = Field(None, description="The last pod failure.")
    progress: Progress | None = Field(None, description="Training progress read from the trainer's metrics.")
    progressSummary: str | None = Field(None, description="e.g. '120/1000 (12%)'.")
    message: str = Field("", description="Summary of the current state.")
    offload: str | None = Field(None, description="What the DeepSpeed offload is, and why (spec.deepspeed "
                                "offload left unset: decided from the GPU's memory).")
