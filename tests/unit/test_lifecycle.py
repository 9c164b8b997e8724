"""The gang lifecycle, table-tested: (job, observed pods, now) -> plan."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest

from hyft_operator import api, lifecycle
from hyft_operator.lifecycle.conditions import set_condition
from hyft_operator.lifecycle.failure import describe_exit
from hyft_operator.lifecycle.observe import PodView, pod_view
from hyft_operator.status import PHASE_CONDITIONS, Reason
from tests.helpers import ROOT, load_example

NOW = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.UTC)
EARLIER = "2026-11-29T11:00:00Z"


def job(status=None, **spec_changes):
    doc = load_example(ROOT / "examples" / "minimal.yaml")
    doc["metadata"]["generation"] = 4
    doc["spec"]["nodes"] = 2
    for key, value in spec_changes.items():
        doc["spec"][key] = value
    doc["status"] = status or {}
    return api.HunyuanFineTune.model_validate(doc)


def pod(rank, phase="Running", attempt=0, **kw):
    name = "minimal-master-0" if rank == 0 else f"minimal-worker-{rank - 1}"
    return PodView(name=name, rank=rank, attempt=attempt, phase=phase, ready=phase == "Running", **kw)


def condition(status, type_):
    return next(c for c in status.conditions if c.type == type_)


@dataclass
class Case:
    id: str
    status: dict
    pods: list
    phase: str
    create: list = field(default_factory=list)
    delete: list = field(default_factory=list)
    restarts: int = 0
    attempt: int = 0
    event: str | None = None
    message: str | None = None
    spec: dict = field(default_factory=dict)


CASES = [
    Case("new job creates the whole gang", {}, [], "Pending", create=[0, 1], event="PodsCreated"),
    Case("crash mid-creation: only the missing pod is created", {}, [pod(0, "Pending")], "Pending",
         create=[1]),
    Case("all pods running -> Running", {"phase": "Pending", "startTime": EARLIER},
         [pod(0), pod(1)], "Running", event="AllPodsRunning"),
    Case("one pod still pending -> stays Pending", {"phase": "Pending", "startTime": EARLIER},
         [pod(0), pod(1, "Pending")], "Pending"),
    Case("master succeeded -> Succeeded", {"phase": "Running", "startTime": EARLIER},
         [pod(0, "Succeeded", exit_code=0), pod(1)], "Succeeded", event="Completed"),
    Case("worker OOM-killed -> whole gang restarts as attempt 1", {"phase": "Running", "startTime": EARLIER},
         [pod(0), pod(1, "Failed", exit_code=137, reason="OOMKilled")], "Restarting",
         delete=["minimal-master-0", "minimal-worker-0"], restarts=1, attempt=1, event="GangRestart",
         message="pod minimal-worker-0 failed (exit code 137 (SIGKILL), OOMKilled)"),
    Case("torchrun's exit 1 (e.g. NCCL timeout) is retryable", {"phase": "Running", "startTime": EARLIER},
         [pod(0, "Failed", exit_code=1), pod(1)], "Restarting",
         delete=["minimal-master-0", "minimal-worker-0"], restarts=1, attempt=1),
    Case("old gang still terminating -> wait, create nothing",
         {"phase": "Restarting", "attempt": 1, "restarts": 1, "startTime": EARLIER},
         [pod(0, "Running", attempt=0, deleting=True)], "Restarting", restarts=1, attempt=1),
    Case("old gang gone -> new attempt created",
         {"phase": "Restarting", "attempt": 1, "restarts": 1, "startTime": EARLIER}, [], "Restarting",
         create=[0, 1], attempt=1, restarts=1),
    Case("new attempt running -> Running", {"phase": "Restarting", "attempt": 1, "restarts": 1,
                                            "startTime": EARLIER},
         [pod(0, attempt=1), pod(1, attempt=1)], "Running", attempt=1, restarts=1),
    Case("backoff exhausted -> Failed naming the pod and exit code",
         {"phase": "Running", "attempt": 3, "restarts": 3, "startTime": EARLIER},
         [pod(0, attempt=3), pod(1, "Failed", attempt=3, exit_code=139)], "Failed",
         delete=["minimal-master-0"], restarts=3, attempt=3, event="BackoffLimitExceeded",
         message="pod minimal-worker-0 failed (exit code 139 (SIGSEGV)); its log: "
                 "runs/minimal/logs/attempt-3/minimal-worker-0.log on volume data; backoff limit 3 reached"),
    Case("a preflight failure (4: /dev/shm too small) is permanent and named",
         {"phase": "Running", "startTime": EARLIER},
         [pod(0, "Failed", exit_code=4), pod(1)], "Failed", delete=["minimal-worker-0"], event="PermanentError",
         message="exit code 4 (preflight: /dev/shm too small)"),
    Case("exit code 2 (invalid config/data) is permanent", {"phase": "Running", "startTime": EARLIER},
         [pod(0, "Failed", exit_code=2, message="data.jsonl line 7: empty content"), pod(1)], "Failed",
         delete=["minimal-worker-0"], event="PermanentError", message="data.jsonl line 7: empty content"),
    Case("a running pod that vanished restarts the gang", {"phase": "Running", "startTime": EARLIER},
         [pod(0)], "Restarting", delete=["minimal-master-0"], restarts=1, attempt=1,
         message="pod minimal-worker-0 failed (PodDeleted)"),
    Case("master stopped early by SIGTERM (preempted) is a disruption, not success nor a counted failure",
         {"phase": "Running", "startTime": EARLIER, "restarts": 3, "attempt": 3},
         [pod(0, "Succeeded", exit_code=0, attempt=3, message="hyft: stopped early by SIGTERM: a checkpoint was "
                                                               "saved"),
          pod(1, "Succeeded", exit_code=0, attempt=3)], "Restarting", restarts=3, attempt=4,
         delete=["minimal-master-0", "minimal-worker-0"], event="Disrupted",
         message="a disruption, not counted against the backoff limit"),
    Case("an evicted or preempted pod (DisruptionTarget) restarts the gang without counting, even at the limit",
         {"phase": "Running", "startTime": EARLIER, "restarts": 3, "attempt": 3},
         [pod(0, attempt=3), pod(1, attempt=3, deleting=True,
                                 disrupted="EvictionByEvictionAPI: Eviction API: evicting")],
         "Restarting", restarts=3, attempt=4, delete=["minimal-master-0"], event="Disrupted",
         message="pod minimal-worker-0 failed (Disrupted): EvictionByEvictionAPI"),
    Case("evicted pod (no exit code) is retryable", {"phase": "Running", "startTime": EARLIER},
         [pod(0), pod(1, "Failed", reason="Evicted")], "Restarting", restarts=1, attempt=1,
         delete=["minimal-master-0", "minimal-worker-0"]),
    Case("suspend deletes the pods", {"phase": "Running", "startTime": EARLIER}, [pod(0), pod(1)],
         "Suspended", delete=["minimal-master-0", "minimal-worker-0"], event="Suspended",
         spec={"runPolicy": {"suspend": True}}),
    Case("resume recreates the gang", {"phase": "Suspended", "startTime": EARLIER}, [], "Pending",
         create=[0, 1], event="Resumed"),
    Case("pods killed by our own suspend are not failures on resume", {"phase": "Suspended", "startTime": EARLIER},
         [pod(0, "Failed", exit_code=143, deleting=True)], "Pending", create=[1]),
    Case("resized to 1 node while suspended: a pod of rank 1 left running is deleted and waited for",
         {"phase": "Suspended", "startTime": EARLIER}, [pod(0, deleting=True), pod(1)], "Suspended",
         delete=["minimal-worker-0"], spec={"nodes": 1}),
    Case("resized to 1 node: the new master runs while rank 1 is gone -> Running",
         {"phase": "Pending", "startTime": EARLIER}, [pod(0)], "Running", event="AllPodsRunning", spec={"nodes": 1}),
    Case("deadline exceeded -> Failed, pods deleted", {"phase": "Running", "startTime": "2026-11-29T10:00:00Z"},
         [pod(0), pod(1)], "Failed", delete=["minimal-master-0", "minimal-worker-0"], event="DeadlineExceeded",
         spec={"runPolicy": {"activeDeadlineSeconds": 3600}}),
    Case("TTL after finish deletes the pods, keeps the resource",
         {"phase": "Succeeded", "startTime": EARLIER, "completionTime": "2026-11-29T11:30:00Z"},
         [pod(0, "Succeeded", exit_code=0), pod(1, "Succeeded", exit_code=0)], "Succeeded",
         delete=["minimal-master-0", "minimal-worker-0"], event="PodsDeleted",
         spec={"runPolicy": {"ttlSecondsAfterFinished": 600}}),
    Case("TTL not yet due keeps the pods", {"phase": "Succeeded", "startTime": EARLIER,
                                            "completionTime": "2026-11-29T11:59:00Z"},
         [pod(0, "Succeeded", exit_code=0)], "Succeeded", spec={"runPolicy": {"ttlSecondsAfterFinished": 600}}),
    Case("failed job kills the survivors", {"phase": "Failed", "completionTime": EARLIER},
         [pod(0, "Failed", exit_code=2), pod(1)], "Failed", delete=["minimal-worker-0"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_lifecycle_table(case):
    spec = {k: v for k, v in case.spec.items()}
    result = lifecycle.plan(job(case.status, **spec), case.pods, NOW)
    st = result.status
    assert st.phase == case.phase
    assert result.create == case.create
    assert sorted(result.delete) == sorted(case.delete)
    assert (st.restarts, st.attempt) == (case.restarts, case.attempt)
    assert st.observedGeneration == 4
    if case.event:
        assert case.event in [e.reason for e in result.events]
    if case.message:
        assert case.message in st.message
    # exactly one phase condition is True, and it is the phase
    phase_true = [c.type for c in st.conditions if c.type in PHASE_CONDITIONS and c.status == "True"]
    assert phase_true == ([case.phase] if case.phase in PHASE_CONDITIONS else [])


def test_kstatus_conditions_follow_the_phase():
    running = lifecycle.plan(job({"phase": "Pending", "startTime": EARLIER}), [pod(0), pod(1)], NOW).status
    assert condition(running, "Reconciling").status == "True"
    assert condition(running, "Ready").status == "False"
    assert condition(running, "Stalled").status == "False"
    done = lifecycle.plan(job({"phase": "Running", "startTime": EARLIER}),
                          [pod(0, "Succeeded", exit_code=0), pod(1)], NOW).status
    assert (condition(done, "Ready").status, condition(done, "Reconciling").status) == ("True", "False")
    assert done.completionTime == "2026-11-29T12:00:00Z"
    failed = lifecycle.plan(job({"phase": "Running", "startTime": EARLIER}),
                            [pod(0, "Failed", exit_code=2), pod(1)], NOW).status
    assert condition(failed, "Stalled").status == "True" and condition(failed, "Stalled").reason == "PermanentError"
    assert failed.lastFailure.pod == "minimal-master-0" and failed.lastFailure.retryable is False


def test_unschedulable_pods_raise_a_condition_and_a_warning():
    msg = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    result = lifecycle.plan(job({"phase": "Pending", "startTime": EARLIER}),
                            [pod(0, "Pending", unschedulable=msg), pod(1, "Pending")], NOW)
    cond = condition(result.status, "PodsScheduled")
    assert (cond.status, cond.reason) == ("False", "Unschedulable")
    assert msg in cond.message and "minimal-master-0" in cond.message
    assert [e for e in result.events if e.reason == "Unschedulable" and e.type == "Warning"]


def test_last_transition_time_moves_only_on_status_change():
    first = lifecycle.plan(job({"phase": "Pending", "startTime": EARLIER}), [pod(0), pod(1)], NOW).status
    later = NOW + dt.timedelta(minutes=5)
    second = lifecycle.plan(job(first.model_dump(exclude_none=True)), [pod(0), pod(1)], later).status
    assert condition(second, "Running").lastTransitionTime == condition(first, "Running").lastTransitionTime
    assert second.phase == "Running"


def test_a_pending_job_does_not_repeat_its_events():
    first = lifecycle.plan(job({}), [], NOW)
    assert [e.reason for e in first.events] == ["PodsCreated"]  # one event per transition
    waiting = lifecycle.plan(job(first.status.model_dump(exclude_none=True)), [pod(0, "Pending"), pod(1, "Pending")],
                             NOW)
    assert waiting.events == []
    assert waiting.status == first.status  # one status write for the creation: the pods' arrival is no news
    again = lifecycle.plan(job(waiting.status.model_dump(exclude_none=True)),
                           [pod(0, "Pending"), pod(1, "Pending")], NOW)
    assert again.events == []


def test_reconciling_a_settled_status_is_a_fixed_point():
    """Level-based: planning again from the written status changes nothing and emits no event."""
    first = lifecycle.plan(job({"phase": "Pending", "startTime": EARLIER}), [pod(0), pod(1)], NOW)
    again = lifecycle.plan(job(first.status.model_dump(exclude_none=True)), [pod(0), pod(1)], NOW)
    assert again.status == first.status
    assert again.events == [] and again.create == [] and again.delete == []


def test_counts_and_ready_column():
    st = lifecycle.plan(job({"phase": "Pending", "startTime": EARLIER}), [pod(0), pod(1, "Pending")], NOW).status
    assert (st.nodes.total, st.nodes.created, st.nodes.ready) == (2, 2, 1)
    assert st.readyNodes == "1/2"


def test_pod_view_reads_the_api_object():
    view = pod_view({
        "metadata": {"name": "x-worker-0", "labels": {"hyft.io/node-rank": "1", "hyft.io/attempt": "2"}},
        "status": {"phase": "Failed", "containerStatuses": [
            {"name": "trainer", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]},
    })
    assert (view.rank, view.attempt, view.exit_code, view.reason) == (1, 2, 137, "OOMKilled")
    assert describe_exit(137, "OOMKilled") == "exit code 137 (SIGKILL), OOMKilled" and not view.disrupted
    evicted = pod_view({"metadata": {"name": "x-master-0", "deletionTimestamp": EARLIER},
                        "status": {"phase": "Running", "conditions": [
                            {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                             "message": "Preempted in order to admit critical pod"}]}})
    assert evicted.deleting and evicted.disrupted == "PreemptionByScheduler: Preempted in order to admit critical pod"


def test_a_refused_pod_creation_is_kept_in_the_status_while_it_is_retried():
    """The reconciler wrote why admission refused the pod; planning again keeps saying it (no status
    rewrite, no event) until the pods exist."""
    refused = "cannot create pod minimal-master-0: no PriorityClass with name x was found"
    first = lifecycle.plan(job(), [], NOW)
    set_condition(first.status.conditions, "Created", "False", Reason.POD_CREATION_FAILED, refused, NOW, 4)
    first.status.message = refused
    observed = lifecycle.plan(job(first.status.model_dump(exclude_none=True)), [], NOW)
    assert observed.create == [0, 1] and observed.events == [] and observed.status.message == refused
    again = lifecycle.plan(job(observed.status.model_dump(exclude_none=True)), [], NOW)
    assert again.status == observed.status and again.events == []  # a retry writes nothing
    created = lifecycle.plan(job(again.status.model_dump(exclude_none=True)), [pod(0, "Pending"), pod(1, "Pending")],
                             NOW)
    assert condition(created.status, "Created").reason == "PodsCreated" and created.status.message != refused


def test_preflight_passed_follows_the_master_trainer_and_the_preflight_exit_codes():
    """Unknown while the gang starts, True once the master reports that every rank passed, False
    with the check's reason when a pod exits with a preflight code; a new attempt asks again."""
    from hyft_operator.progress import Scrape
    from hyft_trainer.contract import EXIT_GANG_INCOMPLETE, EXIT_SHM_TOO_SMALL

    started = NOW.timestamp() - 60
    gang = [pod(0, started_at=started), pod(1, started_at=started)]
    running = {"phase": "Running", "startTime": EARLIER}
    waiting = lifecycle.plan(job(running), gang, NOW, watching=True).status
    assert (condition(waiting, "PreflightPassed").status, condition(waiting, "PreflightPassed").reason) == (
        "Unknown", "Checking")
    old_answer = Scrape(started - 5, None, None, preflight_seconds=3.0)  # the previous attempt's master
    assert condition(lifecycle.plan(job(waiting.model_dump(exclude_none=True)), gang, NOW, old_answer,
                                    watching=True).status, "PreflightPassed").status == "Unknown"
    passed = lifecycle.plan(job(waiting.model_dump(exclude_none=True)), gang, NOW,
                            Scrape(started + 10, None, None, preflight_seconds=4.25), watching=True).status
    cond = condition(passed, "PreflightPassed")
    assert (cond.status, cond.reason) == ("True", "Passed") and "every rank passed in 4.2s" in cond.message

    refused = lifecycle.plan(job(passed.model_dump(exclude_none=True)),
                             [pod(0), pod(1, "Failed", exit_code=EXIT_GANG_INCOMPLETE,
                                          message="preflight: not every one of the 2 nodes joined")],
                             NOW, watching=True).status
    cond = condition(refused, "PreflightPassed")
    assert (refused.phase, cond.status, cond.reason) == ("Restarting", "False", "GangIncomplete")
    assert "attempt 0: pod minimal-worker-0 failed (exit code 6 (preflight: not every node joined))" in cond.message
    assert "not every one of the 2 nodes joined" in refused.message  # a retryable preflight code restarts

    shm = lifecycle.plan(job(running), [pod(0, "Failed", exit_code=EXIT_SHM_TOO_SMALL), pod(1)], NOW).status
    assert (shm.phase, condition(shm, "PreflightPassed").reason) == ("Failed", "ShmTooSmall")  # permanent
    quiet = lifecycle.plan(job(running), gang, NOW).status  # not scraping: no guess either way
    assert not [c for c in quiet.conditions if c.type == "PreflightPassed"]


@pytest.mark.parametrize("watching, phase, requeue", [
    (True, "Running", 5.0),  # the next pass reads the master's metrics again: status.progress stays fresh
    (False, "Running", None),  # metrics off: nothing to read
    (True, "Pending", None),
])
def test_a_running_gang_is_revisited_at_the_scrape_interval(watching, phase, requeue):
    pods = [pod(0), pod(1)] if phase == "Running" else [pod(0), pod(1, "Pending")]
    result = lifecycle.plan(job({"phase": "Pending", "startTime": EARLIER}), pods, NOW, watching=watching)
    assert (result.status.phase, result.requeue_after) == (phase, requeue)
