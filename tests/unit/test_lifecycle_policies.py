"""Each lifecycle policy on its own, table-tested against one planning pass (lifecycle.gang.Gang);
test_lifecycle.py tests them together through lifecycle.plan."""
from __future__ import annotations

import pytest

from hyft_operator import api
from hyft_operator.lifecycle import create, deadline, failure, invalid, memory, resize, stall, suspend, ttl
from hyft_operator.lifecycle.gang import Gang
from hyft_operator.progress import Scrape, TrainerClock
from hyft_operator.status import PHASE_CONDITIONS, ConditionType, HunyuanFineTuneStatus, Reason
from tests.unit.test_lifecycle import EARLIER, NOW, job, pod

RUNNING = {"phase": "Running", "startTime": EARLIER}
STARTED = NOW.timestamp() - 600  # the gang's pods started 10 minutes ago
GANG = [pod(0, started_at=STARTED), pod(1, started_at=STARTED)]
BOTH = ["minimal-master-0", "minimal-worker-0"]


def gang(status=None, pods=(), scrape=None, watching=False, **run_policy):
    return Gang(job(status or {}, runPolicy=run_policy), list(pods), NOW, scrape, watching)


@pytest.mark.parametrize("suspended, applied, phase, deleted", [
    (False, False, "Running", []),
    (True, True, "Suspended", BOTH),
])
def test_suspend(suspended, applied, phase, deleted):
    g = gang(RUNNING, GANG, suspend=suspended)
    assert suspend.apply(g) is applied
    assert (g.st.phase, g.plan.delete) == (phase, deleted)


@pytest.mark.parametrize("seconds, applied, requeue", [
    (None, False, None),
    (7200, False, 3600.0),  # started an hour ago: due in an hour
    (3600, True, None),  # due now
])
def test_deadline(seconds, applied, requeue):
    g = gang(RUNNING, GANG, activeDeadlineSeconds=seconds)
    assert deadline.apply(g) is applied
    assert g.plan.requeue_after == requeue
    if applied:
        assert (g.st.phase, g.reason, g.plan.delete) == ("Failed", Reason.DEADLINE_EXCEEDED, BOTH)


@pytest.mark.parametrize("phase, ttl_seconds, completed, deleted, requeue", [
    ("Succeeded", None, "2026-11-29T11:00:00Z", [], None),
    ("Succeeded", 600, "2026-11-29T11:55:00Z", [], 300.0),
    ("Succeeded", 600, "2026-11-29T11:50:00Z", BOTH, None),
    ("Failed", None, "2026-11-29T11:50:00Z", ["minimal-worker-0"], None),  # the survivors go at once
])
def test_ttl(phase, ttl_seconds, completed, deleted, requeue):
    pods = [pod(0, "Failed" if phase == "Failed" else "Succeeded", exit_code=2 if phase == "Failed" else 0),
            pod(1, "Running" if phase == "Failed" else "Succeeded")]
    g = gang({"phase": phase, "completionTime": completed}, pods, ttlSecondsAfterFinished=ttl_seconds)
    ttl.apply(g)
    assert (sorted(g.plan.delete), g.plan.requeue_after) == (sorted(deleted), requeue)
    assert g.st.podsDeletedAfterTtl is (deleted == BOTH)


@pytest.mark.parametrize("pods, old_phase, found", [
    (GANG, "Running", None),
    ([pod(0), pod(1, "Failed", exit_code=137, reason="OOMKilled")], "Running", ("minimal-worker-0", True)),
    ([pod(0, "Failed", exit_code=2), pod(1)], "Running", ("minimal-master-0", False)),
    ([pod(0, "Failed", exit_code=143, deleting=True), pod(1)], "Running", None),  # our own deletion
    ([pod(0)], "Running", ("minimal-worker-0", True)),  # vanished once the gang ran
    ([pod(0)], "Pending", None),  # not created yet
    ([pod(0, "Succeeded", exit_code=0, message="hyft: stopped early by SIGTERM"), pod(1)], "Running",
     ("minimal-master-0", True)),
])
def test_the_first_failure(pods, old_phase, found):
    got = failure.first_failure(gang({"phase": old_phase, "startTime": EARLIER}, pods))
    assert (got and (got.pod, got.retryable)) == (found or None)


@pytest.mark.parametrize("restarts, limit, retryable, phase, reason, attempt", [
    (0, 3, True, "Restarting", Reason.GANG_RESTART, 1),
    (3, 3, True, "Failed", Reason.BACKOFF_LIMIT_EXCEEDED, 3),
    (0, 3, False, "Failed", Reason.PERMANENT_ERROR, 0),
    (0, 0, True, "Failed", Reason.BACKOFF_LIMIT_EXCEEDED, 0),
])
def test_backoff(restarts, limit, retryable, phase, reason, attempt):
    pods = [pod(0, attempt=attempt - 1 if phase == "Restarting" else attempt),
            pod(1, "Failed", exit_code=1, attempt=attempt - 1 if phase == "Restarting" else attempt)]
    g = gang({**RUNNING, "restarts": restarts, "attempt": pods[0].attempt}, pods, backoffLimit=limit,
             permanentExitCodes=[2] if retryable else [1])
    assert failure.apply(g)
    assert (g.st.phase, g.reason, g.st.attempt) == (phase, reason, attempt)
    assert g.st.lastFailure.pod == "minimal-worker-0" and (g.st.completionTime is not None) is (phase == "Failed")


def clock(idle, stepped):
    now = NOW.timestamp()
    return Scrape(now, None, TrainerClock(started=STARTED, last_step=now - idle if stepped else None, now=now,
                                          step=5 if stepped else None))


@pytest.mark.parametrize("scrape, watching, limits, outcome", [
    (clock(30, True), True, {"stallTimeoutSeconds": 60}, ("requeue", 30.0)),
    (clock(90, True), True, {"stallTimeoutSeconds": 60}, Reason.STALL_TIMEOUT),
    (clock(90, True), False, {"stallTimeoutSeconds": 60}, None),  # not scraping: no verdict
    (clock(90, True), True, {"startupTimeoutSeconds": 60}, None),  # it stepped: start-up is over
    (clock(500, False), True, {"startupTimeoutSeconds": 300}, Reason.STARTUP_TIMEOUT),
    (None, True, {"startupTimeoutSeconds": 900}, ("requeue", 300.0)),  # no answer: the pods' start counts
    (None, True, {"startupTimeoutSeconds": 300}, Reason.STARTUP_TIMEOUT),
])
def test_stall_and_startup(scrape, watching, limits, outcome):
    g = gang(RUNNING, GANG, scrape=scrape, watching=watching, **limits)
    applied = stall.apply(g)
    if isinstance(outcome, tuple):
        assert not applied and g.plan.requeue_after == pytest.approx(outcome[1], abs=1)
    elif outcome is None:
        assert not applied and g.plan.requeue_after is None
    else:
        assert applied and (g.st.phase, g.reason, g.st.attempt) == ("Restarting", outcome, 1)
        assert g.st.lastFailure.reason == outcome


SEVEN_B_AT_RISK = {"model": {"volume": "models", "path": "Hunyuan-7B", "parameters": "7B"}, "memory": "8Gi"}


@pytest.mark.parametrize("check, status, pods, refused", [
    ("Enforce", {}, [], True),
    ("Warn", {}, [], False),
    ("Enforce", {"startTime": EARLIER}, [], False),  # started before: never stopped for it
    ("Enforce", {}, [pod(0, "Pending")], False),
])
def test_memory_enforce(check, status, pods, refused):
    body = job(status).model_dump(exclude_none=True)
    body["spec"].update(SEVEN_B_AT_RISK)
    body["spec"]["runPolicy"]["memoryCheck"] = check
    g = Gang(api.HunyuanFineTune.model_validate(body), pods, NOW, None, False)
    assert memory.refuse(g) is refused
    assert (g.st.phase == "Failed") is refused


@pytest.mark.parametrize("status, pods, create_ranks, phase, reason", [
    ({}, [], [0, 1], "Pending", Reason.PODS_STARTING),
    ({"phase": "Pending", "startTime": EARLIER}, [pod(0), pod(1, "Pending")], [], "Pending", Reason.PODS_STARTING),
    ({"phase": "Pending", "startTime": EARLIER}, GANG, [], "Running", Reason.ALL_PODS_RUNNING),
    (RUNNING, [pod(0, "Succeeded", exit_code=0), pod(1)], [], "Succeeded", Reason.COMPLETED),
    ({"phase": "Suspended", "startTime": EARLIER}, [], [0, 1], "Pending", Reason.RESUMED),
    ({"phase": "Restarting", "attempt": 1, "startTime": EARLIER}, [], [0, 1], "Restarting", ""),
])
def test_create_and_run(status, pods, create_ranks, phase, reason):
    g = gang(status, pods)
    create.apply(g)
    assert (g.plan.create, g.st.phase, g.reason) == (create_ranks, phase, reason)


def phase_conditions(status):
    kinds = (*PHASE_CONDITIONS, ConditionType.RECONCILING, ConditionType.STALLED, ConditionType.READY)
    return {c.type: (c.status, c.reason) for c in status.conditions if c.type in kinds}


def test_an_invalid_spec_fails_the_job_as_any_failure_does():
    """The Failed state is built in one place: an invalid spec's verdict has the same conditions as
    the lifecycle's own failures, and writing it twice changes nothing."""
    written = invalid.failed(HunyuanFineTuneStatus(phase="Running"), "spec.x: bad", NOW, 4)
    g = gang(RUNNING, [pod(0, "Failed", exit_code=2), pod(1)])
    failure.apply(g)
    expected = {t: (s, Reason.INVALID_SPEC if r == Reason.PERMANENT_ERROR else r)
                for t, (s, r) in phase_conditions(g.st).items()}
    assert written.phase == "Failed" and phase_conditions(written) == expected
    assert written.completionTime and written.observedGeneration == 4
    assert invalid.failed(written, "spec.x: bad", NOW, 4) is None


@pytest.mark.parametrize("attempt_after, create_ranks, verdict", [
    (0, [], None),  # the running attempt goes on, told by SpecValid False
    (1, [], "the gang cannot restart on it"),  # it failed: a restart would use the invalid spec
    (0, [1], "the gang cannot restart on it"),  # a pod is missing
])
def test_an_edit_that_makes_a_running_spec_invalid(attempt_after, create_ranks, verdict):
    g = gang(RUNNING, GANG)
    g.st.attempt, g.plan.create = attempt_after, create_ranks
    got = invalid.edited(g.job, g.plan, "spec.x: bad", NOW)
    assert (got and verdict in got) if verdict else got is None
    said = [c for c in g.st.conditions if c.type == ConditionType.SPEC_VALID]
    assert bool(said) is (verdict is None) and [e.reason for e in g.plan.events] == (
        [Reason.INVALID_SPEC] if verdict is None else [])


@pytest.mark.parametrize("placed, total, planned, accumulation, minimum, size", [
    (2, 3, 3, 2, 1, 2),  # 3 nodes x 2 micro-batches = 6: 2 nodes keep it with 3
    (2, 3, 3, 1, 1, 1),  # 3 micro-batches cannot split over 2 nodes: 1 node with 3
    (2, 3, 3, 1, 2, None),  # ... and 1 is below minNodes
    (5, 8, 8, 1, 1, 4),  # at most the pods placed, the largest that divides
    (8, 8, 8, 1, 1, 4),  # everything placed yet one stuck: still below the gang's size
    (0, 3, 3, 2, 1, None),  # nothing placed: nothing to shrink to
    (1, 2, 4, 1, 1, 1),  # an already shrunk gang (2 of 4) shrinks further
])
def test_resize_fitting_size(placed, total, planned, accumulation, minimum, size):
    assert resize.fitting_size(placed, total, planned, accumulation, minimum) == size


UNPLACED = NOW.timestamp() - 120  # the third pod has been unschedulable for 2 minutes


def spread(status, seconds=60, minimum=1, accumulation=2, third=UNPLACED):
    attempt = status.get("attempt", 0)
    pods = [pod(0, "Pending", attempt, scheduled=True), pod(1, "Pending", attempt, scheduled=True),
            pod(2, "Pending", attempt, unschedulable="0/2 nodes: anti-affinity", unschedulable_since=third)]
    policy = {"resize": {"minNodes": minimum, "unschedulableSeconds": seconds}} if seconds else {}
    return Gang(job(status, nodes=3, runPolicy=policy, training={"gradientAccumulationSteps": accumulation}),
                pods, NOW, None, False)


@pytest.mark.parametrize("g, applied, size, requeue", [
    (spread({"phase": "Pending"}), True, 2, 2.0),
    (spread({"phase": "Restarting", "attempt": 1}), True, 2, 2.0),
    (spread({"phase": "Pending"}, seconds=300), False, None, 180.0),  # due in 3 minutes
    (spread({"phase": "Pending"}, seconds=None), False, None, None),  # no policy: it waits
    (spread({"phase": "Pending"}, minimum=2, accumulation=1), False, None, None),  # 2 nodes cannot keep 3
    (spread({"phase": "Running"}), False, None, None),
], ids=["pending", "restarting", "not-yet", "off", "no-fitting-size", "running"])
def test_resize_shrinks_a_gang_the_cluster_cannot_place(g, applied, size, requeue):
    attempt = g.st.attempt
    assert resize.apply(g) is applied
    assert (g.st.gangNodes, g.plan.requeue_after) == (size, requeue)
    if applied:
        assert (g.st.phase, g.reason, g.st.attempt, g.st.restarts) == ("Restarting", Reason.RESIZED, attempt + 1, 0)
        assert sorted(g.plan.delete) == ["minimal-master-0", "minimal-worker-0", "minimal-worker-1"]
        assert "restarting on 2 of 3 nodes" in g.st.message


def test_a_shrunk_gang_runs_at_its_size_and_a_failure_restart_tries_the_full_size():
    shrunk = {"phase": "Restarting", "attempt": 1, "gangNodes": 2}
    running = Gang(job(shrunk, nodes=3), [pod(0, attempt=1), pod(1, attempt=1)], NOW, None, False)
    create.apply(running)
    assert (running.st.phase, running.plan.create, running.total) == ("Running", [], 2)
    failed = Gang(job({**shrunk, "phase": "Running"}, nodes=3), [pod(0, attempt=1), pod(1, "Failed", attempt=1,
                                                                                      exit_code=1)], NOW, None, False)
    assert failure.apply(failed)
    assert (failed.st.attempt, failed.st.gangNodes, failed.total) == (2, None, 3)


def shrunk_running(grow_back, gang_nodes=2, started=STARTED, phase="Running"):
    """Attempt 1 running on gang_nodes of 3 nodes, its pods started at `started` (10 minutes ago)."""
    policy = {"minNodes": 1, "unschedulableSeconds": 60}
    if grow_back is not None:
        policy["growBackAfterSeconds"] = grow_back
    status = {"phase": phase, "attempt": 1, "gangNodes": gang_nodes, "startTime": EARLIER}
    pods = [pod(rank, attempt=1, started_at=started) for rank in range(gang_nodes or 3)]
    return Gang(job(status, nodes=3, runPolicy={"resize": policy}), pods, NOW, None, False)


@pytest.mark.parametrize("g, applied, requeue", [
    (shrunk_running(300), True, 2.0),  # ran 600 s of 300: grows back
    (shrunk_running(900), False, 300.0),  # due in 5 minutes
    (shrunk_running(None), False, None),  # unset: only the next restart tries the full size
    (shrunk_running(300, gang_nodes=None), False, None),  # already at full size
    (shrunk_running(300, started=None), False, None),  # not every pod runs yet: not counted as running
    (shrunk_running(300, phase="Pending"), False, None),
], ids=["due", "not-yet", "off", "full-size", "not-started", "pending"])
def test_resize_grows_a_shrunk_gang_back_once_it_has_run_long_enough(g, applied, requeue):
    before = (g.st.attempt, g.st.gangNodes)
    assert resize.apply(g) is applied
    assert g.plan.requeue_after == requeue
    if applied:
        assert (g.st.phase, g.reason, g.st.attempt, g.st.gangNodes, g.total, g.st.nodes.total, g.st.restarts) == (
            "Restarting", Reason.GROWING_BACK, before[0] + 1, None, 3, 3, 0)
        assert sorted(g.plan.delete) == ["minimal-master-0", "minimal-worker-0"]
        assert "resumes from it on all 3 nodes" in g.st.message and "shrinks again after 60s" in g.st.message
    else:
        assert (g.st.attempt, g.st.gangNodes, g.plan.delete) == (*before, [])


@pytest.mark.parametrize("gang_nodes, nodes, total", [(2, 3, 2), (2, 2, 2), (2, 1, 1)])
def test_a_shrunk_size_gives_way_to_a_spec_resized_to_it_or_below(gang_nodes, nodes, total):
    """status.gangNodes (runPolicy.resize shrank the gang) holds only below spec.nodes: a job resized while
    queued or restarting to that size or fewer runs on spec.nodes."""
    g = Gang(job({"phase": "Restarting", "attempt": 1, "gangNodes": gang_nodes}, nodes=nodes), [], NOW, None, False)
    assert (g.total, g.st.gangNodes) == (total, gang_nodes if gang_nodes < nodes else None)
