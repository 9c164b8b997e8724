"""The operator against the real API server: examples applied, the gang lifecycle
driven through KWOK, validation by the server, GC, crash safety, kubectl output."""
from __future__ import annotations

import itertools
import json
import logging
import re
import threading
import time

import pytest
import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from hyft_operator import api, builders, handlers
from hyft_operator import reconciler as reconciliation
from hyft_operator.reconciler import JobGone, Reconciler
from hyft_trainer.config import parse_config
from hyft_trainer.offload import stage_name
from tests.helpers import EXAMPLES, ROOT, wait_for
from tests.jobs import (
    GVP,
    LOCAL_TINY_CLAIMS,
    cpu_job,
    create,
    exit_pod,
    get,
    local_tiny_claims,
    patch_spec,
    pods,
    wait_phase,
)


def load(path):
    return yaml.safe_load(path.read_text())


def env_of(pod):
    return {e.name: e.value for e in pod.spec.containers[0].env}


@pytest.fixture(scope="module")
def priority_class(api_client):
    """What a cluster admin sets up once; the 2-node example uses it."""
    try:
        client.SchedulingV1Api(api_client).create_priority_class(
            {"metadata": {"name": "training-high"}, "value": 1000})
    except ApiException as err:
        if err.status != 409:
            raise


# ---------------------------------------------------------------- examples
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_applying_each_example_creates_service_config_and_pods(crds, api_client, op_namespace, priority_class,
                                                               path):
    body = load(path)
    name = body["metadata"]["name"]
    crds.kubectl("apply", "-n", op_namespace, "-f", str(path))
    nodes = body["spec"].get("nodes", 1)
    found = wait_for(lambda: (p := pods(api_client, op_namespace, name)) and len(p) == nodes and p,
                     what=f"{nodes} pods")
    core = client.CoreV1Api(api_client)
    svc = core.read_namespaced_service(name, op_namespace)
    assert svc.spec.cluster_ip == "None" and svc.spec.publish_not_ready_addresses
    cm = core.read_namespaced_config_map(f"{name}-config", op_namespace)
    config = parse_config(yaml.safe_load(cm.data["train.yaml"]))
    assert config.job_name == name
    master_addr = f"{name}-master-0.{name}.{op_namespace}.svc"
    for rank, pod in enumerate(found):
        env = env_of(pod)
        assert env["NODE_RANK"] == env["PET_NODE_RANK"] == str(rank)
        assert env["NNODES"] == env["PET_NNODES"] == str(nodes)
        assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == master_addr
        assert env["MASTER_PORT"] == env["PET_MASTER_PORT"] == str(body["spec"].get("masterPort", 29500))
        assert env["NPROC_PER_NODE"] == env["PET_NPROC_PER_NODE"] == str(body["spec"].get("gpusPerNode", 8) or 1)
        assert "RANK" not in env and "WORLD_SIZE" not in env
        assert pod.spec.subdomain == name and pod.metadata.owner_references[0].kind == api.KIND
    assert found[0].spec.hostname == f"{name}-master-0"
    status = wait_for(lambda: get(api_client, op_namespace, name).get("status"), what="status")
    assert status["observedGeneration"] == 1
    assert status["nodes"]["total"] == nodes


def test_master_address_is_published_by_the_headless_service(api_client, op_namespace):
    """The DNS name MASTER_ADDR uses is served from the EndpointSlice's hostname entry."""
    create(api_client, op_namespace, cpu_job("dns"))
    wait_phase(api_client, op_namespace, "dns", "Running")
    discovery = client.DiscoveryV1Api(api_client)

    def master_endpoint():
        slices = discovery.list_namespaced_endpoint_slice(
            op_namespace, label_selector="kubernetes.io/service-name=dns").items
        return next((e for s in slices for e in s.endpoints or [] if e.hostname == "dns-master-0"), None)

    endpoint = wait_for(master_endpoint, what="master endpoint in the EndpointSlice")
    master = client.CoreV1Api(api_client).read_namespaced_pod("dns-master-0", op_namespace)
    assert endpoint.addresses == [master.status.pod_ip]


# --------------------------------------------------------------- lifecycle
def test_running_then_worker_failure_restarts_whole_gang_then_succeeds(api_client, op_namespace):
    create(api_client, op_namespace, cpu_job("gang"))
    status = wait_phase(api_client, op_namespace, "gang", "Running")
    assert status["readyNodes"] == "2/2" and status["attempt"] == 0
    first_uids = {p.metadata.uid for p in pods(api_client, op_namespace, "gang")}

    exit_pod(api_client, op_namespace, "gang-worker-0", 137, "OOMKilled")

    def new_gang_running():
        current = pods(api_client, op_namespace, "gang")
        status = get(api_client, op_namespace, "gang")["status"]
        ok = (status["phase"] == "Running" and status["attempt"] == 1 and len(current) == 2
              and all(p.metadata.labels["hyft.io/attempt"] == "1" for p in current))
        return (status, current) if ok else None

    status, current = wait_for(new_gang_running, what="attempt 1 running")
    assert status["restarts"] == 1
    assert {p.metadata.uid for p in current}.isdisjoint(first_uids), "the master must be restarted too"
    assert status["lastFailure"]["pod"] == "gang-worker-0" and status["lastFailure"]["reason"] == "OOMKilled"

    exit_pod(api_client, op_namespace, "gang-master-0", 0)
    status = wait_phase(api_client, op_namespace, "gang", "Succeeded")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True" and conditions["Succeeded"]["status"] == "True"
    assert conditions["Reconciling"]["status"] == "False"
    assert status["completionTime"]
    events = client.CoreV1Api(api_client).list_namespaced_event(
        op_namespace, field_selector="involvedObject.name=gang").items
    reasons = {e.reason for e in events}
    assert {"PodsCreated", "AllPodsRunning", "GangRestart", "Completed"} <= reasons
    # counted once each, per namespace, for the restart and finished-job alerts
    wait_finished_count(op_namespace, "Succeeded", 1)
    assert metric("hyft_operator_jobs_finished_total", namespace=op_namespace, phase="Failed") == 0
    assert metric("hyft_operator_gang_restarts_total", namespace=op_namespace) == 1


def test_exhausted_backoff_fails_with_a_reason_naming_the_pod(api_client, op_namespace):
    create(api_client, op_namespace, cpu_job("doomed", runPolicy={"backoffLimit": 0}))
    wait_phase(api_client, op_namespace, "doomed", "Running")
    exit_pod(api_client, op_namespace, "doomed-worker-0", 1)
    status = wait_phase(api_client, op_namespace, "doomed", "Failed")
    assert "doomed-worker-0" in status["message"] and "exit code 1" in status["message"]
    assert "backoff limit 0" in status["message"]
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "BackoffLimitExceeded")
    # the surviving master was stopped
    wait_for(lambda: [p.metadata.name for p in pods(api_client, op_namespace, "doomed")] == ["doomed-worker-0"],
             what="survivor deleted")


def test_permanent_exit_code_fails_without_restart(api_client, op_namespace):
    create(api_client, op_namespace, cpu_job("badcfg", nodes=1))
    wait_phase(api_client, op_namespace, "badcfg", "Running")
    exit_pod(api_client, op_namespace, "badcfg-master-0", 2)
    status = wait_phase(api_client, op_namespace, "badcfg", "Failed")
    assert status["restarts"] == 0 and "permanent" in status["message"]


def test_an_invalid_edit_leaves_the_running_attempt_alone_and_fails_the_job_when_it_needs_new_pods(
        api_client, op_namespace):
    """Pods are made from a valid generation; an edit of a mutable field that the operator refuses
    (CEL cannot read pass-through affinity) is reported at once but only applies at a restart."""
    create(api_client, op_namespace, cpu_job("edited"))
    wait_phase(api_client, op_namespace, "edited", "Running")
    running = {p.metadata.uid for p in pods(api_client, op_namespace, "edited")}

    def spec_valid():
        status = get(api_client, op_namespace, "edited")["status"]
        return next((c for c in status["conditions"] if c["type"] == "SpecValid"), None), status

    patch_spec(api_client, op_namespace, "edited", {"scheduling": {"affinity": {"nodeAffinity": "gpu"}}})
    condition, status = wait_for(lambda: (found := spec_valid())[0] and found, what="SpecValid False")
    assert (condition["status"], condition["reason"]) == ("False", "InvalidSpec")
    assert "spec.scheduling.affinity.nodeAffinity" in condition["message"] and status["phase"] == "Running"
    patch_spec(api_client, op_namespace, "edited", {"scheduling": {"affinity": None}})  # fixed: the condition goes
    wait_for(lambda: spec_valid()[0] is None, what="SpecValid gone once the spec is valid again")
    patch_spec(api_client, op_namespace, "edited", {"scheduling": {"affinity": {"nodeAffinity": "gpu"}}})
    wait_for(lambda: spec_valid()[0], what="SpecValid False again")
    assert {p.metadata.uid for p in pods(api_client, op_namespace, "edited")} == running
    warnings = client.CoreV1Api(api_client).list_namespaced_event(
        op_namespace, field_selector="involvedObject.name=edited,reason=InvalidSpec").items
    assert len(warnings) == 2  # once per invalid generation, not per reconcile

    exit_pod(api_client, op_namespace, "edited-worker-0", 1)  # a restart needs pods from the invalid spec
    status = wait_phase(api_client, op_namespace, "edited", "Failed")
    assert status["restarts"] == 0 and "spec.scheduling.affinity.nodeAffinity" in status["message"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Failed"]["reason"] == "InvalidSpec" and "SpecValid" not in conditions
    wait_for(lambda: [p.metadata.name for p in pods(api_client, op_namespace, "edited")] == ["edited-worker-0"],
             what="the master stopped")


def test_suspend_and_resume(api_client, op_namespace):
    create(api_client, op_namespace, cpu_job("pausable"))
    wait_phase(api_client, op_namespace, "pausable", "Running")
    patch_spec(api_client, op_namespace, "pausable", {"runPolicy": {"suspend": True}})
    status = wait_phase(api_client, op_namespace, "pausable", "Suspended")
    assert status["readyNodes"] == "0/2"
    wait_for(lambda: not pods(api_client, op_namespace, "pausable"), what="pods deleted")
    patch_spec(api_client, op_namespace, "pausable", {"runPolicy": {"suspend": False}})
    status = wait_phase(api_client, op_namespace, "pausable", "Running")
    assert status["restarts"] == 0 and len(pods(api_client, op_namespace, "pausable")) == 2


def test_unschedulable_gang_says_so(api_client, op_namespace):
    create(api_client, op_namespace, cpu_job("huge", nodes=1, gpusPerNode=16, training={"precision": "bf16"}))

    def condition():
        status = get(api_client, op_namespace, "huge").get("status") or {}
        return next((c for c in status.get("conditions", []) if c["type"] == "PodsScheduled"
                     and c["status"] == "False" and c["reason"] != "WaitingForScheduler"), None)

    # first WaitingForScheduler (created, not bound yet), then the scheduler's verdict
    cond = wait_for(condition, what="PodsScheduled=False with the scheduler's reason")
    assert cond["reason"] == "Unschedulable" and "nvidia.com/gpu" in cond["message"]


def test_ttl_deletes_pods_but_keeps_the_resource(api_client, op_namespace):
    create(api_client, op_namespace, cpu_job("short", nodes=1, runPolicy={"ttlSecondsAfterFinished": 1}))
    wait_phase(api_client, op_namespace, "short", "Running")
    exit_pod(api_client, op_namespace, "short-master-0", 0)
    wait_phase(api_client, op_namespace, "short", "Succeeded")
    wait_for(lambda: not pods(api_client, op_namespace, "short"), what="pods removed after TTL")
    assert get(api_client, op_namespace, "short")["status"]["podsDeletedAfterTtl"] is True


def test_deleting_the_resource_removes_every_child(api_client, op_namespace):
    create(api_client, op_namespace, cpu_job("bye"))
    wait_phase(api_client, op_namespace, "bye", "Running")
    client.CustomObjectsApi(api_client).delete_namespaced_custom_object(*GVP, op_namespace, api.PLURAL, "bye")
    core = client.CoreV1Api(api_client)

    def all_gone():
        left = [p.metadata.name for p in pods(api_client, op_namespace, "bye")]
        left += [s.metadata.name for s in core.list_namespaced_service(op_namespace).items]
        left += [c.metadata.name for c in core.list_namespaced_config_map(op_namespace).items
                 if c.metadata.name.startswith("bye")]
        return not left

    wait_for(all_gone, timeout=90, what="children garbage-collected")


def test_jobs_carry_no_finalizer_go_at_once_and_their_name_can_be_reused(api_client, op_namespace):
    custom = client.CustomObjectsApi(api_client)
    create(api_client, op_namespace, cpu_job("again"))
    wait_phase(api_client, op_namespace, "again", "Running")
    first = get(api_client, op_namespace, "again")
    assert not first["metadata"].get("finalizers")
    custom.delete_namespaced_custom_object(*GVP, op_namespace, api.PLURAL, "again")
    with pytest.raises(ApiException) as gone:  # nothing holds the deletion up
        get(api_client, op_namespace, "again")
    assert gone.value.status == 404
    wait_for(lambda: (op_namespace, "again") not in handlers._wakeups, timeout=15, what="the job's loop to end")

    # the same name again, while the first job's pods may still await garbage collection
    create(api_client, op_namespace, cpu_job("again"))
    wait_phase(api_client, op_namespace, "again", "Running", timeout=90)
    uid = get(api_client, op_namespace, "again")["metadata"]["uid"]
    assert uid != first["metadata"]["uid"]
    wait_for(lambda: [p.metadata.owner_references[0].uid for p in pods(api_client, op_namespace, "again")]
             == [uid, uid], timeout=90, what="the new job's own two pods")


def test_a_finalizer_left_by_an_earlier_operator_is_taken_off(api_client, op_namespace):
    body = cpu_job("legacy")
    body["metadata"]["finalizers"] = [handlers.FINALIZER]
    create(api_client, op_namespace, body)
    wait_for(lambda: not get(api_client, op_namespace, "legacy")["metadata"].get("finalizers"), timeout=30,
             what="the old finalizer to go")
    wait_phase(api_client, op_namespace, "legacy", "Running")


def test_a_deletion_the_watch_missed_ends_the_loop_before_any_pod(crds, api_client, namespace):
    """A stale cached job (deleted while the watch was away, so no DELETED event): the first write's
    404 is checked against the API server, and the pass ends without creating anything."""
    create(api_client, namespace, cpu_job("ghost"))
    stale = get(api_client, namespace, "ghost")
    client.CustomObjectsApi(api_client).delete_namespaced_custom_object(*GVP, namespace, api.PLURAL, "ghost")
    r = Reconciler(api_client, builders.OperatorDefaults(), scrape_progress=False)
    with pytest.raises(JobGone):
        r.reconcile(namespace, "ghost", obj=stale, pods=[])
    assert pods(api_client, namespace, "ghost") == []
    assert client.CoreV1Api(api_client).list_namespaced_service(namespace).items == []


def test_without_kueues_visibility_api_a_queued_job_shows_no_place_and_it_is_not_asked_each_pass(api_client, caplog):
    """No Kueue visibility API served here (no APIService for it): no place, one INFO line, asked again later."""
    r = Reconciler(api_client, builders.OperatorDefaults(), scrape_progress=False)
    with caplog.at_level(logging.INFO, logger="hyft.operator"):
        assert r._queue_position("default", "gpus", "job") is None
        assert r._queue_position("default", "gpus", "job") is None
    said = [(rec.levelname, rec.getMessage()) for rec in caplog.records if "visibility" in rec.getMessage()]
    assert len(said) == 1 and said[0][0] == "INFO" and "asking again in 300s" in said[0][1], said


def test_local_tiny_example_runs_on_read_write_many_claims(crds, api_client, op_namespace):
    """The volume setup the real-node test (tests/e2e/test_real_node.py) gives the unchanged example."""
    for doc in local_tiny_claims(op_namespace, "/hyft-e2e"):
        crds.kubectl("apply", "-f", "-", input=json.dumps(doc))
    crds.kubectl("apply", "-n", op_namespace, "-f", str(ROOT / "examples" / "local-tiny.yaml"))
    core = client.CoreV1Api(api_client)
    wait_for(lambda: all(c.status.phase == "Bound" for c in core.list_namespaced_persistent_volume_claim(
        op_namespace).items), timeout=60, what="claims bound to the hostPath volumes")
    created = wait_for(lambda: (p := pods(api_client, op_namespace, "local-tiny")) and len(p) == 2 and p,
                       what="both pods created")
    claims = {v.persistent_volume_claim.claim_name for v in created[0].spec.volumes if v.persistent_volume_claim}
    assert claims == set(LOCAL_TINY_CLAIMS)
    assert (get(api_client, op_namespace, "local-tiny").get("status") or {}).get("phase") != "Failed"


def test_two_node_job_with_a_read_write_once_output_is_refused(api_client, op_namespace):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_persistent_volume_claim(op_namespace, {
        "metadata": {"name": "rwo"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    body = cpu_job("rwo-out", volumes=[{"name": "shared", "persistentVolumeClaim": {"claimName": "rwo"}}])
    create(api_client, op_namespace, body)
    status = wait_phase(api_client, op_namespace, "rwo-out", "Failed")
    assert "ReadWriteMany" in status["message"]
    assert pods(api_client, op_namespace, "rwo-out") == []
    wait_finished_count(op_namespace, "Failed", 1)


def test_pods_refused_by_admission_are_reported_not_crash_looped(api_client, op_namespace):
    body = cpu_job("noprio", nodes=1)
    body["spec"]["scheduling"]["priorityClassName"] = "does-not-exist"
    create(api_client, op_namespace, body)

    def reported():
        status = get(api_client, op_namespace, "noprio").get("status") or {}
        return next((c for c in status.get("conditions", []) if c["type"] == "Created"
                     and c["reason"] == "PodCreationFailed"), None)

    cond = wait_for(reported, what="PodCreationFailed condition")
    assert "does-not-exist" in cond["message"] and "noprio-master-0" in cond["message"]
    # once the admin creates it, the job proceeds
    client.SchedulingV1Api(api_client).create_priority_class({"metadata": {"name": "does-not-exist"},
                                                              "value": 10})
    wait_phase(api_client, op_namespace, "noprio", "Running")


# ------------------------------------------------------------- validation (the invalid table: test_validation.py)
def test_immutable_fields_cannot_change_and_the_size_only_while_suspended(crds, api_client, namespace):
    create(api_client, namespace, cpu_job("fixed"))
    with pytest.raises(ApiException) as err:
        patch_spec(api_client, namespace, "fixed", {"model": {"volume": "shared", "path": "models/other"}})
    assert err.value.status == 422 and "spec.model" in err.value.body and "immutable" in err.value.body
    with pytest.raises(ApiException) as err:
        patch_spec(api_client, namespace, "fixed", {"nodes": 3})
    assert err.value.status == 422 and "spec.nodes" in err.value.body and "only while the job is suspended" in \
        err.value.body
    patch_spec(api_client, namespace, "fixed", {"runPolicy": {"suspend": True}})
    patch_spec(api_client, namespace, "fixed", {"nodes": 3, "gpusPerNode": 0})
    patch_spec(api_client, namespace, "fixed", {"nodes": 1, "runPolicy": {"suspend": False}})  # in one go, too


def test_a_suspended_job_resized_comes_back_at_its_new_size(api_client, op_namespace):
    create(api_client, op_namespace, cpu_job("resize", nodes=2))
    wait_phase(api_client, op_namespace, "resize", "Running")
    patch_spec(api_client, op_namespace, "resize", {"runPolicy": {"suspend": True}})
    wait_phase(api_client, op_namespace, "resize", "Suspended")
    patch_spec(api_client, op_namespace, "resize", {"nodes": 1})
    patch_spec(api_client, op_namespace, "resize", {"runPolicy": {"suspend": False}})
    seen = {}

    def running_on_one_node():
        seen.update(status=get(api_client, op_namespace, "resize")["status"],
                    pods={p.metadata.name: (p.status.phase, p.metadata.labels.get("hyft.io/attempt"),
                                            p.metadata.deletion_timestamp is not None)
                          for p in pods(api_client, op_namespace, "resize")})
        status = seen["status"]
        return status if status["phase"] == "Running" and status["readyNodes"] == "1/1" else None

    try:
        status = wait_for(running_on_one_node, what="the job running on 1 node")
    except AssertionError as err:
        raise AssertionError(f"{err}; last seen: {seen}") from None
    assert [p.metadata.name for p in pods(api_client, op_namespace, "resize")] == ["resize-master-0"]
    assert status["restarts"] == 0


def test_server_side_defaults_are_applied(crds, api_client, namespace):
    obj = create(api_client, namespace, cpu_job("defaults"))
    spec = obj["spec"]
    assert spec["method"]["type"] == "lora" and spec["method"]["lora"]["rank"] == 8
    assert spec["deepspeed"] == {}  # stage and offload unset: auto
    assert spec["runPolicy"]["backoffLimit"] == 3 and spec["masterPort"] == 29500


# ----------------------------------------------------------- crash safety
class CrashAfter:
    """Wraps an API method: the call number `n` (1-based) and later ones raise, as if the process died."""

    def __init__(self, fn, n):
        self.fn, self.n, self.calls = fn, n, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls >= self.n:
            raise SystemExit("operator killed")
        return self.fn(*args, **kwargs)


def test_operator_killed_mid_gang_creation_leaves_no_duplicate_or_orphan(crds, api_client, namespace):
    """`namespace` is not watched by the in-process operator: we play the operator's
    lifetimes ourselves, killing the first after one pod of a 4-node gang."""
    create(api_client, namespace, cpu_job("crashy", nodes=4))
    first = Reconciler(api_client, builders.OperatorDefaults(), scrape_progress=False)
    first.core.create_namespaced_pod = CrashAfter(first.core.create_namespaced_pod, 2)
    with pytest.raises(SystemExit):
        first.reconcile(namespace, "crashy")
    assert len(pods(api_client, namespace, "crashy")) == 1

    # two fresh operator processes now race on the same job
    survivors = [Reconciler(api_client, builders.OperatorDefaults(), scrape_progress=False) for _ in range(2)]
    threads = [threading.Thread(target=r.reconcile, args=(namespace, "crashy")) for r in survivors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    current = pods(api_client, namespace, "crashy")
    assert [p.metadata.name for p in current] == ["crashy-master-0", "crashy-worker-0", "crashy-worker-1",
                                                 "crashy-worker-2"]
    uid = get(api_client, namespace, "crashy")["metadata"]["uid"]
    assert all(p.metadata.owner_references[0].uid == uid for p in current)
    assert {p.metadata.labels["hyft.io/attempt"] for p in current} == {"0"}


def test_operator_killed_between_restart_status_and_pod_deletion_converges(crds, api_client, namespace):
    create(api_client, namespace, cpu_job("crashy2"))
    r = Reconciler(api_client, builders.OperatorDefaults(), scrape_progress=False)
    r.reconcile(namespace, "crashy2")
    wait_for(lambda: all(p.status.phase == "Running" for p in pods(api_client, namespace, "crashy2"))
             and len(pods(api_client, namespace, "crashy2")) == 2, what="pods running")
    r.reconcile(namespace, "crashy2")
    exit_pod(api_client, namespace, "crashy2-worker-0", 137)
    wait_for(lambda: any(p.status.phase == "Failed" for p in pods(api_client, namespace, "crashy2")),
             what="worker failed")
    dying = Reconciler(api_client, builders.OperatorDefaults(), scrape_progress=False)
    dying.core.delete_namespaced_pod = CrashAfter(dying.core.delete_namespaced_pod, 1)
    with pytest.raises(SystemExit):
        dying.reconcile(namespace, "crashy2")
    assert get(api_client, namespace, "crashy2")["status"]["attempt"] == 1  # written before the deletes

    fresh = Reconciler(api_client, builders.OperatorDefaults(), scrape_progress=False)

    def converged():
        fresh.reconcile(namespace, "crashy2")
        current = pods(api_client, namespace, "crashy2")
        return len(current) == 2 and all(p.metadata.labels["hyft.io/attempt"] == "1" for p in current)

    wait_for(converged, timeout=60, interval=1, what="attempt 1 gang")
    status = get(api_client, namespace, "crashy2")["status"]
    assert (status["restarts"], status["attempt"]) == (1, 1)


def test_a_stale_delete_cannot_remove_the_next_attempts_pod(crds, api_client, namespace):
    """Pod names repeat across attempts: a delete planned from an old view carries the old pod's UID,
    and the API server refuses it for the new pod of the same name."""
    core = client.CoreV1Api(api_client)
    body = {"metadata": {"name": "same-name"}, "spec": {"containers": [{"name": "c", "image": "hyft.local/x"}]}}
    old = core.create_namespaced_pod(namespace, body)
    core.delete_namespaced_pod("same-name", namespace, grace_period_seconds=0)

    def gone():
        try:
            core.read_namespaced_pod("same-name", namespace)
        except ApiException as err:
            return err.status == 404
        return False

    wait_for(gone, what="the old pod gone")
    new = core.create_namespaced_pod(namespace, body)
    reconciler = Reconciler(api_client, builders.OperatorDefaults(), scrape_progress=False)
    reconciler._delete_pod(namespace, "same-name", old.metadata.uid)
    assert core.read_namespaced_pod("same-name", namespace).metadata.uid == new.metadata.uid
    reconciler._delete_pod(namespace, "same-name", new.metadata.uid)
    wait_for(gone, what="the new pod deleted by its own UID")


class TrainerMetricsEndpoint:
    """The trainer's own exporter (hyft_trainer.metrics) behind a test HTTP server that can be
    made slow; counts the scrapes still being answered, and those answered."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from prometheus_client import generate_latest

        from hyft_trainer.metrics import TrainingMetrics

        self.metrics = TrainingMetrics("scraped", 0)
        self.delay = 0.0
        self.in_flight = 0
        self.served = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                endpoint.in_flight += 1
                try:
                    time.sleep(endpoint.delay)
                    body = generate_latest(endpoint.metrics.registry)
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(body)
                    endpoint.served += 1
                except OSError:
                    pass
                finally:
                    endpoint.in_flight -= 1

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _running_and_scraped(api_client, namespace, name, endpoint, **options) -> Reconciler:
    """A job driven to Running by a reconciler that scrapes the test's trainer endpoint."""
    create(api_client, namespace, cpu_job(name))
    r = Reconciler(api_client, builders.OperatorDefaults(), metrics_url=lambda job: endpoint.url, **options)
    _drive(r, namespace, name, lambda st: st.get("phase") == "Running", "Running")
    return r


def test_progress_is_scraped_beside_the_reconcile_and_a_hung_trainer_endpoint_holds_nothing_up(
        crds, gpu_nodes, api_client, namespace, trainer_endpoint):
    r = _running_and_scraped(api_client, namespace, "scraped", trainer_endpoint, scrape_timeout=30)
    trainer_endpoint.metrics.global_step.set(5)
    trainer_endpoint.metrics.total_steps.set(20)
    trainer_endpoint.metrics.loss.set(1.25)
    status = _drive(r, namespace, "scraped", lambda st: st.get("progress", {}).get("step") == 5, "progress 5")
    progress = status["progress"]
    assert (progress["totalSteps"], progress["loss"], progress["percent"]) == (20, 1.25, 25.0)
    assert status["progressSummary"] == "5/20 (25%)"

    trainer_endpoint.delay = 30.0  # a trainer that hangs on /metrics
    trainer_endpoint.metrics.global_step.set(6)
    _drive(r, namespace, "scraped", lambda st: trainer_endpoint.in_flight == 1, "a scrape in flight")
    exit_pod(api_client, namespace, "scraped-worker-0", 137)  # the reconciles go on meanwhile
    restarted = _drive(r, namespace, "scraped", lambda st: st.get("restarts") == 1,
                       "the gang restarted while the scrape hangs")
    assert trainer_endpoint.in_flight == 1 and restarted["progress"]["step"] == 5


def test_progress_alone_goes_to_the_status_at_most_once_per_interval(crds, gpu_nodes, api_client, namespace,
                                                                       trainer_endpoint):
    """Each status write costs the API server a validation of the whole resource and every watcher a
    copy: a step counter that moves with every scrape must not rewrite the status each time. Judged on
    every write the API server stored: one that something else caused carries the latest progress with
    it, as it should."""
    r = _running_and_scraped(api_client, namespace, "paced", trainer_endpoint, progress_write_seconds=3600)
    trainer_endpoint.metrics.total_steps.set(20)
    trainer_endpoint.metrics.global_step.set(5)
    _drive(r, namespace, "paced", lambda st: st.get("progress", {}).get("step") == 5, "the first progress, at once")
    first = get(api_client, namespace, "paced")

    trainer_endpoint.metrics.global_step.set(6)
    answered = trainer_endpoint.served
    _drive(r, namespace, "paced", lambda st: trainer_endpoint.served >= answered + 2, "two scrapes of step 6")
    _drive(r, namespace, "paced", lambda st: True, "one more pass")
    stored = [first, *_written_since(api_client, namespace, first)]
    for before, after in itertools.pairwise(stored):
        progress_alone = (before["status"].get("progress") != after["status"].get("progress")
                          and _apart_from_progress(before["status"]) == _apart_from_progress(after["status"]))
        assert not progress_alone, f"progress alone written: {after['status']} by {after['metadata']['managedFields']}"
    assert stored[-1]["status"]["phase"] == "Running"

    r.progress_write_seconds = 0.0  # as if the interval had passed
    assert _drive(r, namespace, "paced", lambda st: True, "one more pass")["progress"]["step"] == 6


def _apart_from_progress(status: dict) -> dict:
    return {key: value for key, value in status.items() if key not in ("progress", "progressSummary")}


def _written_since(api_client, namespace: str, seen: dict) -> list[dict]:
    """The job as the API server stored it after `seen`, each write up to now, replayed by a watch."""
    name, since = seen["metadata"]["name"], seen["metadata"]["resourceVersion"]
    now = get(api_client, namespace, name)["metadata"]["resourceVersion"]
    stream, stored, version = watch.Watch(), [], since
    if now != since:
        for event in stream.stream(client.CustomObjectsApi(api_client).list_namespaced_custom_object, *GVP,
                                   namespace, api.PLURAL, field_selector=f"metadata.name={name}",
                                   resource_version=since, timeout_seconds=60):
            stored.append(event["object"])
            version = event["object"]["metadata"]["resourceVersion"]
            if version == now:
                stream.stop()
    assert version == now, f"the watch replayed the job up to {version}, not {now}"
    return stored


def _stall_job(name, **run_policy):
    return cpu_job(name, runPolicy={"backoffLimit": 1, **run_policy})


def _drive(r, namespace, name, until, what, timeout=60):
    def reached():
        r.reconcile(namespace, name)
        status = get(api_client_of(r), namespace, name).get("status") or {}
        return status if until(status) else None
    return wait_for(reached, timeout=timeout, what=what)


def api_client_of(r):
    return r.core.api_client


@pytest.fixture
def trainer_endpoint(monkeypatch):
    endpoint = TrainerMetricsEndpoint()
    monkeypatch.setattr(reconciliation, "SCRAPE_INTERVAL_SECONDS", 0.0)  # scrape on every pass here
    yield endpoint
    endpoint.close()


def test_a_step_counter_that_stops_restarts_the_gang_then_fails_it_at_the_backoff_limit(
        crds, gpu_nodes, api_client, namespace, trainer_endpoint):
    create(api_client, namespace, _stall_job("stalls", stallTimeoutSeconds=10))
    r = Reconciler(api_client, builders.OperatorDefaults(), metrics_url=lambda job: trainer_endpoint.url)
    _drive(r, namespace, "stalls", lambda st: st.get("phase") == "Running", "Running")
    metrics = trainer_endpoint.metrics
    metrics.global_step.set(7)
    metrics.last_step.set(time.time() - 30)  # 30 s ago in the trainer's clock: past the 10 s stall timeout
    restarted = _drive(r, namespace, "stalls", lambda st: st.get("restarts") == 1, "a stall restart")
    assert restarted["lastFailure"]["reason"] == "StallTimeout"
    assert "no step for 3" in restarted["message"] and "last step 7" in restarted["message"]
    restarting = next(c for c in restarted["conditions"] if c["type"] == "Restarting")
    assert (restarting["status"], restarting["reason"]) == ("True", "StallTimeout")
    events = client.CoreV1Api(api_client).list_namespaced_event(
        namespace, field_selector="involvedObject.name=stalls,reason=StallTimeout").items
    assert len(events) == 1 and events[0].type == "Warning" and "last step 7" in events[0].message
    # the new gang stalls too (the endpoint still says so): the restart counted, the backoff limit is reached
    failed = _drive(r, namespace, "stalls", lambda st: st.get("phase") == "Failed", "Failed")
    assert "BackoffLimitExceeded" in {c["reason"] for c in failed["conditions"]} and failed["restarts"] == 1


def test_a_trainer_that_never_steps_hits_the_startup_timeout(crds, gpu_nodes, api_client, namespace,
                                                             trainer_endpoint):
    trainer_endpoint.metrics.process_start.set(time.time() - 60)  # started a minute ago, no step since
    create(api_client, namespace, _stall_job("slowstart", startupTimeoutSeconds=10, stallTimeoutSeconds=600))
    r = Reconciler(api_client, builders.OperatorDefaults(), metrics_url=lambda job: trainer_endpoint.url)
    restarted = _drive(r, namespace, "slowstart", lambda st: st.get("restarts") == 1, "a start-up timeout")
    assert restarted["lastFailure"]["reason"] == "StartupTimeout"
    assert "no first step 6" in restarted["message"] and "startupTimeoutSeconds is 10s" in restarted["message"]


def test_without_timeouts_a_stalled_trainer_is_left_alone(crds, gpu_nodes, api_client, namespace, trainer_endpoint):
    trainer_endpoint.metrics.process_start.set(time.time() - 600)
    trainer_endpoint.metrics.last_step.set(time.time() - 300)
    trainer_endpoint.metrics.global_step.set(3)
    create(api_client, namespace, _stall_job("patient"))
    r = Reconciler(api_client, builders.OperatorDefaults(), metrics_url=lambda job: trainer_endpoint.url)
    _drive(r, namespace, "patient", lambda st: (st.get("progress") or {}).get("step") == 3, "progress scraped")
    for _ in range(5):
        r.reconcile(namespace, "patient")
    status = get(api_client, namespace, "patient")["status"]
    assert (status["phase"], status["restarts"]) == ("Running", 0)


def test_preflight_passed_comes_from_the_master_and_its_failures_from_the_exit_codes(
        crds, gpu_nodes, api_client, namespace, trainer_endpoint):
    from hyft_trainer.contract import EXIT_GANG_INCOMPLETE, EXIT_SHM_TOO_SMALL

    create(api_client, namespace, _stall_job("checked"))
    r = Reconciler(api_client, builders.OperatorDefaults(), metrics_url=lambda job: trainer_endpoint.url)

    def preflight(st):
        return next((c for c in st.get("conditions") or [] if c["type"] == "PreflightPassed"), {})

    _drive(r, namespace, "checked", lambda st: preflight(st).get("status") == "Unknown", "PreflightPassed Unknown")
    trainer_endpoint.metrics.preflight.set(2.5)
    passed = _drive(r, namespace, "checked", lambda st: preflight(st).get("status") == "True", "PreflightPassed")
    assert "attempt 0: every rank passed in 2.5s" in preflight(passed)["message"]
    exit_pod(api_client, namespace, "checked-worker-0", EXIT_GANG_INCOMPLETE)  # retryable: a gang restart
    restarted = _drive(r, namespace, "checked", lambda st: st.get("restarts") == 1, "a gang restart")
    assert (preflight(restarted)["status"], preflight(restarted)["reason"]) == ("False", "GangIncomplete")
    assert "preflight: not every node joined" in restarted["message"]
    _drive(r, namespace, "checked", lambda st: st.get("phase") == "Running" and st.get("attempt") == 1, "attempt 1")
    exit_pod(api_client, namespace, "checked-master-0", EXIT_SHM_TOO_SMALL)  # permanent
    failed = _drive(r, namespace, "checked", lambda st: st.get("phase") == "Failed", "Failed")
    assert (preflight(failed)["status"], preflight(failed)["reason"]) == ("False", "ShmTooSmall")
    assert "exit code 4 (preflight: /dev/shm too small)" in failed["message"] and failed["restarts"] == 1


def test_memory_check_enforce_fails_the_job_before_any_pod(crds, api_client, op_namespace):
    """A 7B full fine-tune (ZeRO-3 on CPU, 2 nodes) in 8Gi pods: hyft estimate says far more."""
    body = cpu_job("toosmall", memory="8Gi", method={"type": "full"},
                   runPolicy={"memoryCheck": "Enforce"})
    body["spec"]["model"]["path"] = "models/Hunyuan-7B-Instruct"
    create(api_client, op_namespace, body)
    status = wait_phase(api_client, op_namespace, "toosmall", "Failed")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "MemoryRisk" and "more than spec.memory (8.0 GiB)" in failed["message"]
    assert not pods(api_client, op_namespace, "toosmall")
    events = client.CoreV1Api(api_client).list_namespaced_event(
        op_namespace, field_selector="involvedObject.name=toosmall,reason=MemoryRisk").items
    assert len(events) == 1


@pytest.mark.parametrize("size, method, gib, cutoff, memory, stage, chosen, recompute", [
    ("0.5B", "lora", 80, 4096, "512Gi", 0, "none", False),  # LoRA fits every GPU whole: plain DDP
    ("7B", "lora", 80, 4096, "512Gi", 0, "none", False), ("7B", "lora", 141, 4096, "512Gi", 0, "none", False),
    ("7B", "full", 80, 4096, "512Gi", 2, "optimizer", False),  # 2 GPUs: ~80 GiB each without offload
    ("7B", "full", 80, 4096, "128Gi", 3, "optimizer", False),  # ZeRO-2 would load 201 GiB a node: over 80%
    ("7B", "full", 141, 4096, "128Gi", 3, "none", False),
    ("7B", "lora", 80, 16384, "512Gi", 0, "none", True),  # longer rows: the activations fit only recomputed
])
def test_offload_auto_is_decided_from_the_gpu_memory_and_said_in_status(crds, api_client, op_namespace, size, method,
                                                                        gib, cutoff, memory, stage, chosen, recompute):
    name = f"offload-{size.replace('.', '-').lower()}-{method}-{gib}-{cutoff}-{memory.lower()}"
    body = cpu_job(name, nodes=1, gpusPerNode=2, gpuMemory=f"{gib}Gi", memory=memory, method={"type": method},
                   training={"precision": "bf16"}, data={"files": [{"volume": "shared", "path": "data/chat.jsonl"}],
                                                         "cutoffLen": cutoff})
    body["spec"]["model"]["parameters"] = size
    create(api_client, op_namespace, body)
    status = wait_for(lambda: (get(api_client, op_namespace, name).get("status") or {}).get("offload"),
                      timeout=60, what=f"{name} status.offload")
    # full fine-tuning in bf16 is not offered plain DDP (no float32 master weights there): ZeRO-2 comes first
    first = "plain DDP" if method == "lora" else "ZeRO-2 none"
    assert status.startswith(f"{stage_name(stage)}, offload {chosen}, gradient checkpointing "
                             f"{'on' if recompute else 'off'} (the least that fits): per GPU {first} without "
                             "recomputation "), status
    assert f"(90% of {gib:.1f} GiB)" in status and f"[spec.gpuMemory {gib}Gi; model.parameters {size}]" in status
    assert f"(80% of {float(memory[:-2]):.1f} GiB)" in status
    # the status is written before the gang's objects are created: the ConfigMap follows
    config_map = wait_for(lambda: next(iter(client.CoreV1Api(api_client).list_namespaced_config_map(
        op_namespace, field_selector=f"metadata.name={name}-config").items), None), what=f"{name}'s ConfigMap")
    config = parse_config(yaml.safe_load(next(iter(config_map.data.values()))))
    assert (config.zero_stage, config.offload_optimizer, config.offload_param) == \
        (stage, *{"none": (False, False), "optimizer": (True, False)}[chosen])
    assert config.gradient_checkpointing is recompute


def test_fsdp2_and_qlora_jobs_pass_admission_on_their_own_estimates(crds, api_client, op_namespace):
    """7B on two nodes of 8 GPUs of 24 GiB, memoryCheck Enforce: a full FSDP2 job is decided among FSDP2's own
    options (all offloaded or none), a QLoRA job is priced at 4 bits, not as the same job at 16 bits; each
    passes the memory check (its ConfigMap is made) and its trainer config carries the engine and the bits."""
    jobs = {"fsdp2": ({"type": "full"}, {"engine": "fsdp"}), "lora16": ({"type": "lora"}, {}),
            "qlora4": ({"type": "lora", "lora": {"quantizationBit": 4}}, {})}
    for name, (method, training) in jobs.items():
        body = cpu_job(name, nodes=2, gpusPerNode=8, gpuMemory="24Gi", memory="512Gi", method=method,
                       training={"precision": "bf16", **training}, runPolicy={"memoryCheck": "Enforce"})
        body["spec"]["model"]["parameters"] = "7B"
        create(api_client, op_namespace, body)
    configs, no_offload = {}, {}
    for name in jobs:
        status = wait_for(lambda n=name: (get(api_client, op_namespace, n).get("status") or {}).get("offload"),
                          timeout=60, what=f"{name} status.offload")
        # the first figure: no offload, no recomputation (at the cheapest stage, where the stage is auto)
        no_offload[name] = float(re.search(r"per GPU (?:plain DDP|(?:ZeRO-2 )?none) without recomputation "
                                           r"([0-9.]+) GiB", status).group(1))
        config_map = wait_for(lambda n=name: next(iter(client.CoreV1Api(api_client).list_namespaced_config_map(
            op_namespace, field_selector=f"metadata.name={n}-config").items), None), what=f"{name}'s ConfigMap")
        configs[name] = parse_config(yaml.safe_load(config_map.data["train.yaml"]))
        if name == "fsdp2":  # FSDP2 offloads all or nothing: ZeRO's optimizer-only option is not among its own
            assert ", optimizer " not in status and ", params+optimizer " in status, status
    assert configs["fsdp2"].engine == "fsdp" and configs["fsdp2"].offload_param == configs["fsdp2"].offload_optimizer
    assert configs["qlora4"].quantization_bit == 4 and configs["lora16"].engine == "deepspeed"
    # priced at 4 bits: under ZeRO-3 the quantized base is whole on each GPU before it is partitioned (its floor)
    assert no_offload["qlora4"] != no_offload["lora16"]


# ------------------------------------------------------------------ kubectl
def test_kubectl_get_hft_shows_phase_nodes_and_restarts(crds, api_client, op_namespace):
    create(api_client, op_namespace, cpu_job("shown"))
    wait_phase(api_client, op_namespace, "shown", "Running")
    out = crds.kubectl("get", "hft", "-n", op_namespace).stdout
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "NODES", "PROGRESS", "LOSS", "RESTARTS", "AGE"]
    assert row.split()[:3] == ["shown", "Running", "2/2"]
    wide = crds.kubectl("get", "hunyuanfinetunes", "-n", op_namespace, "-o", "wide").stdout
    assert "MODEL" in wide and "models/tiny" in wide


def test_kubectl_explain_teaches_the_spec(crds):
    def explain():
        out = crds.kubectl("explain", "hunyuanfinetune.spec", check=False)
        return out.stdout if out.returncode == 0 else None

    text = wait_for(explain, what="kubectl explain")
    assert "What to fine-tune" in text
    for field in ("model", "data", "nodes", "gpusPerNode", "runPolicy", "deepspeed"):
        assert f"\n  {field}\t" in text
    deep = " ".join(crds.kubectl("explain", "hft.spec.runPolicy.ttlSecondsAfterFinished").stdout.split())
    assert "The resource itself is kept (a GitOps tool would recreate it)" in deep


def metric(name, **labels):
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels)


def wait_finished_count(namespace, phase, expected):
    """The counter moves right after the status write the test waited for."""
    wait_for(lambda: metric("hyft_operator_jobs_finished_total", namespace=namespace, phase=phase) == expected,
             timeout=10, what=f"{phase} jobs counted {expected}")


def test_operator_metrics_count_reconciles_and_gang_creation(api_client, op_namespace):
    from prometheus_client import REGISTRY

    create(api_client, op_namespace, cpu_job("measured", nodes=1))
    wait_phase(api_client, op_namespace, "measured", "Running")
    assert REGISTRY.get_sample_value("hyft_operator_reconciles_total", {"result": "ok"}) > 0
    assert REGISTRY.get_sample_value("hyft_operator_gang_creation_seconds_count") > 0
