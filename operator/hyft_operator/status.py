"""HunyuanFineTune's status (written by the operator only), its phases, and every condition
type and reason it sets: each declared once here, listed in the CRD's docs."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .markers import ApiModel

Phase = Literal["Pending", "Running", "Restarting", "Succeeded", "Failed", "Suspended"]
TERMINAL_PHASES = ("Succeeded", "Failed")


class Condition(ApiModel):
    type: str = Field(description="Condition type (Ready, Reconciling, Stalled, Created, Running, Restarting, "
                                  "Succeeded, Failed, Suspended, PodsScheduled).")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field("", description="CamelCase reason for the last transition.")
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
    phase: Phase = Field("Pending", description="Pending, Running, Restarting, Succeeded, Failed or Suspended.")
    conditions: list[Condition] = Field(default_factory=list, description="Conditions, one per type.")
    attempt: int = Field(0, description="Current gang attempt (pods carry it as hyft.io/attempt).")
    restarts: int = Field(0, description="Gang restarts after failures.")
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
