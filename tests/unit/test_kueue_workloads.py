"""Kueue through its Workload API: the Workload hyft renders, what it reads of Kueue's answer, the status
patches it writes back, and the lifecycle around admission and eviction (pure; the real Kueue is
tests/k8s/test_kueue.py)."""
from __future__ import annotations

import dataclasses

import pytest

from hyft_operator import api, builders, kueue, lifecycle
from hyft_operator.kueue import Action
from hyft_operator.status import Reason
from tests.unit.test_lifecycle import EARLIER, NOW, pod

QUEUE = {"queueName": "gpus"}


def job(status=None, nodes=2, suspend=False, **scheduling):
    from tests.helpers import ROOT, load_example

    doc = load_example(ROOT / "examples" / "minimal.yaml")
    doc["metadata"].update(generation=3, uid="job-uid", namespace="ml")
    doc["spec"]["nodes"] = nodes
    doc["spec"]["scheduling"] = {**QUEUE, **scheduling}
    doc["spec"].setdefault("runPolicy", {})["suspend"] = suspend
    doc["status"] = status or {}
    return api.HunyuanFineTune.model_validate(doc)


def condition(type_, status, reason="", message="", at=EARLIER):
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": at}


def workload_obj(*conditions, nodes=2, active=True, admission=None):
    sets = [{"name": "master", "count": 1}] + ([{"name": "worker", "count": nodes - 1}] if nodes > 1 else [])
    return {"metadata": {"name": "minimal", "resourceVersion": "42", "generation": 1, "uid": "wl-uid"},
            "spec": {"podSets": sets, "active": active, "queueName": "gpus"},
            "status": {"conditions": list(conditions), **({"admission": admission} if admission else {})}}


ADMISSION = {"clusterQueue": "cluster-gpus", "podSetAssignments": [
    {"name": "master", "flavors": {"nvidia.com/gpu": "h100", "cpu": "default"}},
    {"name": "worker", "flavors": {"nvidia.com/gpu": "h100"}}]}
PENDING = workload_obj(condition("QuotaReserved", "False", "Pending",
                                 "couldn't assign flavors to pod set master: insufficient unused quota"))
ADMITTED = workload_obj(condition("QuotaReserved", "True", "QuotaReserved"), condition("Admitted", "True", "Admitted"),
                        admission=ADMISSION)
PREEMPTED = workload_obj(condition("QuotaReserved", "True", "QuotaReserved"), condition("Admitted", "True"),
                         condition("Evicted", "True", "Preempted", "Preempted to accommodate a higher priority "
                                   "Workload"), admission=ADMISSION)


def test_the_view_reads_kueues_conditions_and_admission():
    view = kueue.workload_view(PREEMPTED)
    assert (view.nodes, view.reserved, view.admitted, view.finished) == (2, True, True, False)
    assert view.evicted == ("Preempted", "Preempted to accommodate a higher priority Workload")
    assert view.flavors == ("default", "h100")
    pending = kueue.workload_view(PENDING)
    assert not pending.reserved and not pending.admitted and pending.evicted is None
    assert pending.pending.startswith("couldn't assign flavors")


def test_the_workload_is_the_gang_as_two_pod_sets_with_the_pods_own_templates():
    j = job(nodes=3, priorityClassName="team-high")
    master, worker = builders.pod(j, 0, 0), builders.pod(j, 1, 0)
    body = kueue.workload(j, master, worker, 3, builders.owner_reference(j), builders.labels("minimal"), 1000)
    assert body["apiVersion"] == "kueue.x-k8s.io/v1beta2" and body["kind"] == "Workload"
    assert body["metadata"]["ownerReferences"][0]["uid"] == "job-uid"
    assert body["metadata"]["labels"][builders.LABEL_JOB] == "minimal"
    spec = body["spec"]
    assert (spec["queueName"], spec["active"], spec["priority"]) == ("gpus", True, 1000)
    assert spec["priorityClassRef"] == {"group": "scheduling.k8s.io", "kind": "PriorityClass", "name": "team-high"}
    assert [(s["name"], s["count"]) for s in spec["podSets"]] == [("master", 1), ("worker", 2)]
    assert spec["podSets"][0]["template"]["spec"] == master["spec"]  # Kueue counts what the pods request
    assert spec["podSets"][1]["template"]["spec"] == worker["spec"]
    one = kueue.workload(job(nodes=1), master, None, 1, {}, {}, None)["spec"]
    assert [s["name"] for s in one["podSets"]] == ["master"] and "priorityClassRef" not in one


@pytest.mark.parametrize("scheduling, ref", [
    ({}, None),
    ({"priorityClassName": "team-high"}, kueue.PriorityClassRef("scheduling.k8s.io", "PriorityClass", "team-high")),
    ({"workloadPriorityClassName": "urgent"}, kueue.PriorityClassRef("kueue.x-k8s.io", "WorkloadPriorityClass",
                                                                     "urgent")),
    # Kueue's class ranks the Workload; the pods keep theirs for the scheduler
    ({"priorityClassName": "team-high", "workloadPriorityClassName": "urgent"},
     kueue.PriorityClassRef("kueue.x-k8s.io", "WorkloadPriorityClass", "urgent")),
])
def test_the_workloads_priority_comes_from_kueues_class_else_the_pods(scheduling, ref):
    j = job(**scheduling)
    assert kueue.priority_class(j) == ref
    master = builders.pod(j, 0, 0)
    spec = kueue.workload(j, master, builders.pod(j, 1, 0), 2, {}, {}, 7 if ref else None)["spec"]
    assert spec.get("priorityClassRef") == (ref and {"group": ref.group, "kind": ref.kind, "name": ref.name})
    assert spec.get("priority") == (7 if ref else None)
    assert master["spec"].get("priorityClassName") == scheduling.get("priorityClassName")


def test_pods_carry_no_kueue_labels_and_get_their_pod_sets_placement():
    j = job(nodeSelector={"pool": "a100"}, tolerations=[{"key": "team", "operator": "Exists"}])
    plain = builders.pod(j, 0, 0)
    assert not [k for k in plain["metadata"]["labels"] if k.startswith("kueue.x-k8s.io/")]
    reserved = {"key": "reserved", "operator": "Exists", "effect": "NoSchedule"}
    flavors = {"h100": {"spec": {"nodeLabels": {"gpu": "h100"}, "tolerations": [reserved]}},
               "default": {"spec": {}}}
    admitted = {**ADMITTED, "status": {**ADMITTED["status"], "admissionChecks": [
        {"name": "dws", "state": "Ready", "podSetUpdates": [
            {"name": "worker", "annotations": {"autoscaler.x-k8s.io/consume-provisioning-request": "pr-1"},
             "labels": {"hyft.io/job-name": "not-this", "dws": "yes"}, "nodeSelector": {"zone": "b"}}]}]}}
    master = builders.pod(j, 0, 0, placement=kueue.placement(admitted, flavors, kueue.pod_set(0)))
    assert master["spec"]["nodeSelector"] == {"pool": "a100", "gpu": "h100"}
    assert master["spec"]["tolerations"].count(reserved) == 1 and {"key": "team", "operator": "Exists"} in \
        master["spec"]["tolerations"]
    assert "autoscaler.x-k8s.io/consume-provisioning-request" not in (master["metadata"].get("annotations") or {})
    worker = builders.pod(j, 1, 0, placement=kueue.placement(admitted, flavors, kueue.pod_set(1)))
    assert worker["spec"]["nodeSelector"] == {"pool": "a100", "gpu": "h100", "zone": "b"}
    assert worker["metadata"]["annotations"]["autoscaler.x-k8s.io/consume-provisioning-request"] == "pr-1"
    assert worker["metadata"]["labels"]["dws"] == "yes"
    assert worker["metadata"]["labels"]["hyft.io/job-name"] == "minimal"  # hyft's own labels win


@pytest.mark.parametrize("reason, requeued", [("Preempted", "True"), ("NodeFailures", "True"),
                                              ("Deactivated", "False"), ("ClusterQueueStopped", "False")])
def test_releasing_gives_the_quota_back_and_requeues_as_kueue_does(reason, requeued):
    evicted = workload_obj(condition("QuotaReserved", "True"), condition("Admitted", "True"),
                           condition("PodsReady", "True", "Started"), condition("Evicted", "True", reason, "why"),
                           admission=ADMISSION)
    patch = kueue.released(evicted, NOW)
    assert patch["metadata"] == {"resourceVersion": "42"} and patch["status"]["admission"] is None
    conds = {c["type"]: c for c in patch["status"]["conditions"]}
    assert (conds["QuotaReserved"]["status"], conds["QuotaReserved"]["reason"]) == ("False", "Pending")
    assert (conds["Admitted"]["status"], conds["Admitted"]["reason"]) == ("False", "NoReservation")
    assert (conds["Requeued"]["status"], conds["Requeued"]["reason"]) == (requeued, reason)
    assert conds["Evicted"]["status"] == "True"  # Kueue's own: it clears it when it admits again
    assert (conds["PodsReady"]["status"], conds["PodsReady"]["reason"]) == ("False", "WaitForStart")
    assert conds["QuotaReserved"]["lastTransitionTime"] == "2026-11-29T12:00:00Z"


def test_a_running_gang_says_its_pods_are_ready_once():
    running = {"phase": "Running", "startTime": EARLIER}
    p = plan(job(running), [pod(0), pod(1)], ADMITTED)
    assert (p.status.phase, p.workload) == ("Running", Action.PODS_READY)
    patch = kueue.pods_ready(ADMITTED, NOW)["status"]["conditions"]
    ready = next(c for c in patch if c["type"] == "PodsReady")
    assert (ready["status"], ready["reason"]) == ("True", "Started")
    after = {**ADMITTED, "status": {**ADMITTED["status"], "conditions": patch}}
    assert plan(job(running), [pod(0), pod(1)], after).workload is None
    # not before every pod runs
    assert plan(job({"phase": "Pending", "startTime": EARLIER}), [pod(0), pod(1, "Pending")], ADMITTED).workload \
        is None
    recovering = workload_obj(condition("PodsReady", "False", "WaitForRecovery"), admission=ADMISSION)
    assert next(c for c in kueue.pods_ready(recovering, NOW)["status"]["conditions"]
                if c["type"] == "PodsReady")["reason"] == "Recovered"


def test_finishing_marks_the_workload_finished():
    conds = kueue.finished(ADMITTED, NOW, False, "pod failed")["status"]["conditions"]
    finished = next(c for c in conds if c["type"] == "Finished")
    assert (finished["status"], finished["reason"], finished["message"]) == ("True", "Failed", "pod failed")
    assert len(conds) == 3


def plan(j, pods=(), workload=None):
    return lifecycle.plan(j, list(pods), NOW, workload=kueue.workload_view(workload) if workload else None)


def test_a_queued_job_creates_its_workload_and_no_pod():
    p = plan(job())
    assert (p.status.phase, p.create, p.workload) == ("Queued", [], Action.CREATE)
    p = plan(job({"phase": "Queued"}), workload=PENDING)
    assert (p.status.phase, p.create, p.workload) == ("Queued", [], None)
    assert "insufficient unused quota" in p.status.message and "LocalQueue gpus" in p.status.message
    queued = next(c for c in p.status.conditions if c.type == "Queued")
    assert (queued.status, queued.reason) == ("True", Reason.QUEUED)
    reconciling = next(c for c in p.status.conditions if c.type == "Reconciling")
    assert reconciling.status == "True"


def test_an_admitted_job_creates_its_gang():
    p = plan(job({"phase": "Queued"}), workload=ADMITTED)
    assert (p.status.phase, p.create, p.workload) == ("Pending", [0, 1], None)
    # no queue: no Workload at all
    p = lifecycle.plan(job(queueName=None), [], NOW)
    assert (p.create, p.workload) == ([0, 1], None)


def test_a_preempted_gang_stops_waits_queued_and_gives_its_quota_back_once_its_pods_are_gone():
    running = {"phase": "Running", "startTime": EARLIER, "restarts": 1}
    p = plan(job(running), [pod(0), pod(1)], PREEMPTED)
    assert p.status.phase == "Queued"
    assert sorted(p.delete) == ["minimal-master-0", "minimal-worker-0"] and p.create == []
    assert (p.status.attempt, p.status.restarts, p.status.disruptions) == (1, 1, 1)  # restarts unchanged
    assert "Preempted" in p.status.message and p.workload is None  # quota kept until the pods are gone
    assert [e.reason for e in p.events] == [Reason.EVICTED]
    after = p.status.model_dump(mode="json")
    terminating = [pod(0, deleting=True), pod(1, deleting=True)]
    p = plan(job(after), terminating, PREEMPTED)
    assert (p.status.attempt, p.status.disruptions, p.workload, p.create) == (1, 1, None, [])
    p = plan(job(after), [], PREEMPTED)
    assert (p.status.phase, p.workload, p.create, p.events) == ("Queued", Action.RELEASE, [], [])
    released = kueue.released(PREEMPTED, NOW)
    requeued = {**PREEMPTED, "status": {**PREEMPTED["status"], **released["status"]}}
    p = plan(job(after), [], requeued)
    assert (p.status.phase, p.workload, p.create) == ("Queued", None, [])
    queued = next(c for c in p.status.conditions if c.type == "Queued")
    assert queued.reason == Reason.EVICTED and "evicted by Kueue (Preempted)" in p.status.message
    readmitted = workload_obj(condition("QuotaReserved", "True"), condition("Admitted", "True"),
                              condition("Evicted", "False", "QuotaReserved"), admission=ADMISSION)
    p = plan(job(after), [], readmitted)
    assert (p.status.phase, p.create, p.status.attempt) == ("Pending", [0, 1], 1)


def test_suspending_deactivates_the_workload_and_resuming_activates_it():
    p = plan(job({"phase": "Running", "startTime": EARLIER}, suspend=True), [pod(0), pod(1)], ADMITTED)
    assert (p.status.phase, p.workload, len(p.delete)) == ("Suspended", Action.DEACTIVATE, 2)
    deactivated = workload_obj(condition("QuotaReserved", "True"), condition("Admitted", "True"),
                               condition("Evicted", "True", "Deactivated", "The workload is deactivated"),
                               active=False, admission=ADMISSION)
    suspended = {"phase": "Suspended", "startTime": EARLIER}
    assert plan(job(suspended, suspend=True), [], deactivated).workload == Action.RELEASE
    inactive = workload_obj(condition("QuotaReserved", "False", "Pending"), active=False)
    assert plan(job(suspended, suspend=True), [], inactive).workload is None
    p = plan(job(suspended), [], inactive)
    assert (p.status.phase, p.workload, p.create) == ("Queued", Action.ACTIVATE, [])


def test_a_finished_job_finishes_its_workload_once():
    done = {"phase": "Succeeded", "startTime": EARLIER, "completionTime": EARLIER}
    assert plan(job(done), [], ADMITTED).workload == Action.FINISH
    finished = workload_obj(condition("Finished", "True", "Succeeded"))
    assert plan(job(done), [], finished).workload is None
    # the master exiting 0 finishes the job and the Workload in one pass
    p = plan(job({"phase": "Running", "startTime": EARLIER}), [pod(0, "Succeeded", exit_code=0), pod(1)], ADMITTED)
    assert (p.status.phase, p.workload) == ("Succeeded", Action.FINISH)


def test_a_workload_of_another_size_is_released_then_recreated():
    three = job({"phase": "Queued", "startTime": EARLIER}, nodes=3)
    assert plan(three, [], ADMITTED).workload == Action.RELEASE  # admitted for 2: not run on 3
    assert plan(three, [], PENDING).workload == Action.DELETE
    assert plan(three, [], PENDING).create == []



def test_a_pending_workloads_place_is_read_from_kueues_visibility_answer():
    summary = {"kind": "PendingWorkloadsSummary", "apiVersion": "visibility.kueue.x-k8s.io/v1beta2", "items": [
        {"metadata": {"name": "other", "namespace": "ml"}, "priority": 100, "localQueueName": "gpus",
         "positionInClusterQueue": 0, "positionInLocalQueue": 0},
        {"metadata": {"name": "minimal", "namespace": "ml"}, "priority": 100, "localQueueName": "gpus",
         "positionInClusterQueue": 4, "positionInLocalQueue": 1}]}
    assert kueue.queue_position(summary, "minimal") == kueue.QueuePosition(local=2, cluster=5)
    assert kueue.queue_position(summary, "absent") is None
    assert kueue.queue_position({"items": None}, "minimal") is None
    assert kueue.pending_workloads_path("ml", "gpus") == (
        "/apis/visibility.kueue.x-k8s.io/v1beta2/namespaces/ml/localqueues/gpus/pendingworkloads")


def test_a_queued_job_says_its_place_where_kueue_gives_it():
    placed = dataclasses.replace(kueue.workload_view(PENDING), position=kueue.QueuePosition(local=2, cluster=5))
    p = lifecycle.plan(job({"phase": "Queued"}), [], NOW, workload=placed)
    assert p.status.message.startswith("waiting for Kueue (LocalQueue gpus, number 2 there and 5 in its "
                                       "ClusterQueue): couldn't assign flavors")
    p = plan(job({"phase": "Queued"}), workload=PENDING)
    assert p.status.message.startswith("waiting for Kueue (LocalQueue gpus): couldn't assign flavors")
