"""Kueue, through its Workload API, the way frameworks outside Kueue's own integrations use it: a job
with spec.scheduling.queueName is one Workload (kueue.x-k8s.io/v1beta2) that the job owns, its master and
its workers as two pod sets, so Kueue admits or queues the whole gang at once. hyft creates no pod
before Kueue admits the Workload, and gives each pod what the admission says of its pod set (placement).
When Kueue evicts it (preemption, a stopped queue, deactivation) hyft stops the pods (the trainer
checkpoints on SIGTERM) and, once they are gone, gives the quota back (QuotaReserved False, Requeued as
Kueue's own job integrations set it); a finished job marks its Workload Finished, which frees the quota.
While it waits, its place in line comes from Kueue's visibility API (pendingworkloads of its LocalQueue).
Pure: the lifecycle decides (lifecycle/queue.py), the reconciler does the I/O."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .api import HunyuanFineTune

GROUP, VERSION, PLURAL = "kueue.x-k8s.io", "v1beta2", "workloads"
# Kueue's visibility API (an APIService it installs; VisibilityOnDemand, on by default): pending workloads' places
VISIBILITY_GROUP, VISIBILITY_VERSION = "visibility.kueue.x-k8s.io", "v1beta2"
FLAVORS = "resourceflavors"
WORKLOAD_PRIORITY_CLASSES = "workloadpriorityclasses"
MASTER_SET, WORKER_SET = "master", "worker"
# Evictions Kueue requeues by itself; after the others (deactivated, a stopped queue) the Workload waits
# until it is reactivated or its queue runs again (Kueue's job reconciler sets Requeued the same way).
REQUEUED_AFTER = ("Preempted", "NodeFailures")


class Action(StrEnum):
    CREATE = "create"
    DELETE = "delete"  # its pod sets no longer match the gang: recreated on the next pass
    ACTIVATE = "activate"  # spec.active follows runPolicy.suspend
    DEACTIVATE = "deactivate"
    RELEASE = "release"  # the quota goes back to the ClusterQueue
    PODS_READY = "pods-ready"  # the gang runs (Kueue's waitForPodsReady counts on it)
    FINISH = "finish"


@dataclass(frozen=True)
class WorkloadView:
    """What the lifecycle reads of a job's Workload."""

    nodes: int  # pods over all pod sets
    active: bool
    reserved: bool  # QuotaReserved
    admitted: bool  # Admitted: quota reserved and every admission check ready
    evicted: tuple[str, str] | None  # (reason, message) while Evicted is True
    finished: bool
    pods_ready: bool  # PodsReady, which the owner sets
    pending: str  # why Kueue has not reserved quota (its QuotaReserved message)
    flavors: tuple[str, ...]  # the admitted ResourceFlavors
    position: QueuePosition | None = None  # while pending, where Kueue's visibility API gives it


@dataclass(frozen=True)
class QueuePosition:
    """A pending Workload's place, counted from 1 (next in line); Kueue's own positions start at 0."""

    local: int  # in its LocalQueue
    cluster: int  # in the ClusterQueue behind it


def pending_workloads_path(namespace: str, queue: str) -> str:
    return (f"/apis/{VISIBILITY_GROUP}/{VISIBILITY_VERSION}/namespaces/{namespace}/localqueues/{queue}"
            "/pendingworkloads")


def queue_position(summary: dict[str, Any], workload: str) -> QueuePosition | None:
    """The Workload's place in Kueue's answer (a PendingWorkloadsSummary); None if it is not listed."""
    item = next((i for i in summary.get("items") or [] if (i.get("metadata") or {}).get("name") == workload), None)
    if item is None:
        return None
    return QueuePosition(int(item.get("positionInLocalQueue", 0)) + 1, int(item.get("positionInClusterQueue", 0)) + 1)


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), None)


def _true(obj: dict[str, Any], type_: str) -> bool:
    return (_condition(obj, type_) or {}).get("status") == "True"


def workload_view(obj: dict[str, Any]) -> WorkloadView:
    admission = (obj.get("status") or {}).get("admission") or {}
    evicted = _condition(obj, "Evicted") if _true(obj, "Evicted") else None
    flavors = sorted({f for a in admission.get("podSetAssignments") or [] for f in (a.get("flavors") or {}).values()})
    return WorkloadView(
        nodes=sum(int(s.get("count", 1)) for s in obj["spec"]["podSets"]),
        active=obj["spec"].get("active", True),
        reserved=_true(obj, "QuotaReserved"),
        admitted=_true(obj, "Admitted"),
        evicted=(evicted.get("reason", ""), evicted.get("message", "")) if evicted else None,
        finished=_true(obj, "Finished"),
        pods_ready=_true(obj, "PodsReady"),
        pending=(_condition(obj, "QuotaReserved") or {}).get("message", ""),
        flavors=tuple(flavors),
    )


@dataclass(frozen=True)
class PriorityClassRef:
    group: str
    kind: str
    name: str


def priority_class(job: HunyuanFineTune) -> PriorityClassRef | None:
    """Where the Workload's priority comes from: Kueue's WorkloadPriorityClass, else the pods' PriorityClass."""
    scheduling = job.spec.scheduling
    if scheduling.workloadPriorityClassName:
        return PriorityClassRef(GROUP, "WorkloadPriorityClass", scheduling.workloadPriorityClassName)
    if scheduling.priorityClassName:
        return PriorityClassRef("scheduling.k8s.io", "PriorityClass", scheduling.priorityClassName)
    return None


def workload(job: HunyuanFineTune, master: dict[str, Any], worker: dict[str, Any] | None, nodes: int,
             owner: dict[str, Any], labels: dict[str, str], priority: int | None) -> dict[str, Any]:
    """The job's Workload: master (rank 0) and worker pod sets with the pods' own templates, so Kueue counts
    exactly what the pods request. priority: the value of priority_class(job)."""
    def entry(name: str, pod: dict[str, Any], count: int) -> dict[str, Any]:
        meta = pod["metadata"]
        template = {"metadata": {"labels": meta.get("labels", {}), "annotations": meta.get("annotations") or {}},
                    "spec": pod["spec"]}
        return {"name": name, "count": count, "template": template}

    spec: dict[str, Any] = {"queueName": job.spec.scheduling.queueName,
                            "podSets": [entry(MASTER_SET, master, 1)],
                            "active": not job.spec.runPolicy.suspend}
    if worker is not None and nodes > 1:
        spec["podSets"].append(entry(WORKER_SET, worker, nodes - 1))
    if ref := priority_class(job):
        spec["priorityClassRef"] = {"group": ref.group, "kind": ref.kind, "name": ref.name}
        spec["priority"] = priority
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Workload",
            "metadata": {"name": job.metadata["name"], "namespace": job.metadata["namespace"], "labels": labels,
                         "ownerReferences": [owner]},
            "spec": spec}


def _set(conditions: list[dict[str, Any]], type_: str, status: str, reason: str, message: str,
         now: dt.datetime, generation: int | None) -> list[dict[str, Any]]:
    stamp = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    old = next((c for c in conditions if c["type"] == type_), None)
    new = {"type": type_, "status": status, "reason": reason, "message": message[:32768],
           "observedGeneration": generation,
           "lastTransitionTime": old["lastTransitionTime"] if old and old["status"] == status else stamp}
    return [new if c is old else c for c in conditions] if old else [*conditions, new]


def _patch(obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    # the whole conditions list is written: the resourceVersion guards it
    return {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "status": status}


def released(obj: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """The status merge patch that gives the Workload's quota back once its pods are gone."""
    conditions = list(obj["status"].get("conditions") or [])
    generation = obj["metadata"].get("generation")
    evicted = _condition(obj, "Evicted") if _true(obj, "Evicted") else None
    why = (evicted or {}).get("message") or "the gang was stopped"
    if evicted:
        reason = evicted.get("reason", "")
        conditions = _set(conditions, "Requeued", "True" if reason in REQUEUED_AFTER else "False", reason, why, now,
                          generation)
    conditions = _set(conditions, "QuotaReserved", "False", "Pending", why, now, generation)
    if _true(obj, "Admitted"):
        conditions = _set(conditions, "Admitted", "False", "NoReservation", "The workload has no reservation", now,
                          generation)
    if _condition(obj, "PodsReady"):  # the next admission waits for its own pods again
        conditions = _set(conditions, "PodsReady", "False", "WaitForStart", "Not all pods are ready or succeeded",
                          now, generation)
    return _patch(obj, {"admission": None, "conditions": conditions})


def pods_ready(obj: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """The status merge patch that says every pod of the gang runs: Kueue's waitForPodsReady, where a cluster
    turns it on, evicts a Workload whose pods do not get there in time (and reads this to stop waiting)."""
    old = _condition(obj, "PodsReady") or {}
    reason = "Recovered" if old.get("reason") in ("WaitForRecovery", "Recovered") else "Started"
    conditions = _set(list(obj["status"].get("conditions") or []), "PodsReady", "True", reason,
                      "All pods reached readiness and the workload is running", now, obj["metadata"].get("generation"))
    return _patch(obj, {"conditions": conditions})


def finished(obj: dict[str, Any], now: dt.datetime, succeeded: bool, message: str) -> dict[str, Any]:
    """The status merge patch that marks the Workload Finished (Kueue frees its quota)."""
    conditions = _set(list((obj.get("status") or {}).get("conditions") or []), "Finished", "True",
                      "Succeeded" if succeeded else "Failed", message, now, obj["metadata"].get("generation"))
    return _patch(obj, {"conditions": conditions})


@dataclass(frozen=True)
class Placement:
    """What Kueue's admission adds to one pod set's pods, as its own job integrations apply it: the node
    labels and tolerations of the ResourceFlavors assigned to the pod set, and the updates admission checks
    ask for (a ProvisioningRequest's annotations, say)."""

    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]
    labels: dict[str, str]
    annotations: dict[str, str]


NO_PLACEMENT = Placement({}, [], {}, {})  # a job outside Kueue


def pod_set(rank: int) -> str:
    return MASTER_SET if rank == 0 else WORKER_SET


def placement(obj: dict[str, Any], flavors: dict[str, dict[str, Any]], name: str) -> Placement:
    """Pod set `name`'s placement on the admitted Workload `obj`; flavors: the ResourceFlavors by name."""
    status = obj.get("status") or {}
    assigned = next((a for a in (status.get("admission") or {}).get("podSetAssignments") or []
                     if a.get("name") == name), {})
    selector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}

    def add_tolerations(more: list[dict[str, Any]]) -> None:
        tolerations.extend(t for t in more if t not in tolerations)

    for flavor in dict.fromkeys((assigned.get("flavors") or {}).values()):
        spec = flavors[flavor].get("spec") or {}
        selector.update(spec.get("nodeLabels") or {})
        add_tolerations(spec.get("tolerations") or [])
    for check in status.get("admissionChecks") or []:
        for update in check.get("podSetUpdates") or []:
            if update.get("name") == name:
                selector.update(update.get("nodeSelector") or {})
                add_tolerations(update.get("tolerations") or [])
                labels.update(update.get("labels") or {})
                annotations.update(update.get("annotations") or {})
    return Placement(selector, tolerations, labels, annotations)
