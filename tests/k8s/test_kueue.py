"""hyft under a real Kueue (built from its Go module, its webhooks served to the API server): a
ClusterQueue of 16 GPUs on two KWOK 8-GPU nodes, 2x8-GPU jobs that wait their turn as Queued, run when
admitted (on the admitted flavor's nodes), give way to a higher-priority job without losing a restart,
and come back when the preemptor finishes; an operator's first pass over queued jobs changes nothing."""
from __future__ import annotations

import json

import pytest
from kubernetes import client

from hyft_envtest.kueue import Kueue
from hyft_envtest.kwok import gpu_node
from hyft_operator import builders, kueue
from hyft_operator.reconciler import Reconciler
from hyft_operator.status import Reason
from tests.helpers import wait_for
from tests.jobs import cpu_job, create, exit_pod, get, pods, wait_phase

POOL = {"hyft.io/test-pool": "kueue"}
NODES = ["kueue-node-0", "kueue-node-1"]
QUEUE = "gpus"
PRIORITIES = {"training-low": 100, "training-high": 1000}


def apply(control_plane, *docs):
    for doc in docs:
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(doc))


@pytest.fixture(scope="module")
def kueue_cluster(control_plane, crds):
    """Kueue running; a flavor on two 8-GPU nodes, a 16-GPU ClusterQueue that preempts lower priorities."""
    with Kueue(control_plane):
        apply(control_plane, *(gpu_node(n, labels=POOL) for n in NODES))
        apply(control_plane, *({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                                "metadata": {"name": name}, "value": value} for name, value in PRIORITIES.items()))
        apply(control_plane,
              {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "kueue-gpus"},
               "spec": {"nodeLabels": POOL}},
              {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": "cluster-gpus"},
               "spec": {"namespaceSelector": {}, "preemption": {"withinClusterQueue": "LowerPriority"},
                        "resourceGroups": [{"coveredResources": ["nvidia.com/gpu"], "flavors": [
                            {"name": "kueue-gpus", "resources": [{"name": "nvidia.com/gpu", "nominalQuota": 16}]}]}]}})
        yield control_plane
        for name in NODES:
            control_plane.kubectl("delete", "node", name, "--wait=false")


@pytest.fixture
def queue_namespace(kueue_cluster, op_namespace):
    apply(kueue_cluster, {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
                          "metadata": {"name": QUEUE, "namespace": op_namespace},
                          "spec": {"clusterQueue": "cluster-gpus"}})
    yield op_namespace
    # the quota goes with the jobs (their Workloads are collected with them): the next test starts afresh
    kueue_cluster.kubectl("delete", "hunyuanfinetunes", "--all", "-n", op_namespace, "--wait=false")


def gpu_job(name, priority="training-low"):
    # no nodeSelector of its own: the pods land where Kueue's flavor says
    return cpu_job(name, nodes=2, gpusPerNode=8, scheduling={"queueName": QUEUE, "priorityClassName": priority})


def workload(api_client, namespace, name):
    return client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        kueue.GROUP, kueue.VERSION, namespace, kueue.PLURAL, name)


def running(api_client, namespace, name, attempt=0):
    status = wait_phase(api_client, namespace, name, "Running", timeout=90)
    found = pods(api_client, namespace, name)
    assert status["attempt"] == attempt and len(found) == 2, status
    assert {p.spec.node_name for p in found} == set(NODES)  # the admitted flavor's node labels
    assert all(p.spec.node_selector == POOL for p in found)
    wait_for(lambda: any(c["type"] == "PodsReady" and c["status"] == "True"
                         for c in workload(api_client, namespace, name)["status"]["conditions"]),
             what=f"{name}'s Workload PodsReady (Kueue's waitForPodsReady)")
    return status


def finish(api_client, namespace, name):
    for rank in (1, 0):  # as trainers do: the whole gang exits (and frees its GPUs)
        exit_pod(api_client, namespace, builders.pod_name(name, rank), 0)
    wait_phase(api_client, namespace, name, "Succeeded")
    wait_for(lambda: any(c["type"] == "Finished" and c["status"] == "True"
                         for c in workload(api_client, namespace, name)["status"]["conditions"]),
             what=f"{name}'s Workload Finished (its quota freed)")


def test_jobs_wait_their_turn_and_give_way_to_a_higher_priority_without_a_restart(api_client, queue_namespace):
    ns = queue_namespace
    create(api_client, ns, gpu_job("first"))
    running(api_client, ns, "first")
    create(api_client, ns, gpu_job("second"))
    queued = wait_for(lambda: (s := get(api_client, ns, "second").get("status") or {}).get("phase") == "Queued"
                      and "insufficient" in s.get("message", "") and s, what="second queued with Kueue's reason")
    assert next(c for c in queued["conditions"] if c["type"] == "Queued")["reason"] == Reason.QUEUED
    assert "LocalQueue gpus" in queued["message"] and queued["readyNodes"] == "0/2"
    assert pods(api_client, ns, "second") == []

    # an operator starting afresh (no caches) finds nothing to change on a queued job
    before = (get(api_client, ns, "second")["metadata"]["resourceVersion"],
              workload(api_client, ns, "second")["metadata"]["resourceVersion"])
    fresh = Reconciler(api_client, builders.OperatorDefaults(), scrape_progress=False)
    fresh.reconcile(ns, "second")
    after = (get(api_client, ns, "second")["metadata"]["resourceVersion"],
             workload(api_client, ns, "second")["metadata"]["resourceVersion"])
    assert after == before and pods(api_client, ns, "second") == []

    finish(api_client, ns, "first")
    running(api_client, ns, "second")
    victims = {p.metadata.name: p.metadata.uid for p in pods(api_client, ns, "second")}

    create(api_client, ns, gpu_job("urgent", priority="training-high"))
    evicted = wait_for(lambda: (s := get(api_client, ns, "second").get("status") or {}).get("phase") == "Queued"
                       and s, what="second preempted back to Queued")
    assert "Preempted" in evicted["message"], evicted["message"]
    assert next(c for c in evicted["conditions"] if c["type"] == "Queued")["reason"] == Reason.EVICTED
    assert (evicted["restarts"], evicted["disruptions"], evicted["attempt"]) == (0, 1, 1)
    events = client.CoreV1Api(api_client).list_namespaced_event(ns, field_selector="involvedObject.name=second")
    assert any(e.reason == Reason.EVICTED for e in events.items)
    # its pods were deleted (SIGTERM, the trainer's checkpoint) before the quota went to the preemptor
    wait_for(lambda: not {p.metadata.uid for p in pods(api_client, ns, "second")} & set(victims.values()),
             what="the preempted pods gone")
    running(api_client, ns, "urgent")
    assert get(api_client, ns, "second")["status"]["phase"] == "Queued"

    finish(api_client, ns, "urgent")
    resumed = running(api_client, ns, "second", attempt=1)
    assert (resumed["restarts"], resumed["disruptions"]) == (0, 1)
    finish(api_client, ns, "second")


def test_a_suspended_job_gives_its_quota_back(api_client, queue_namespace):
    ns = queue_namespace
    create(api_client, ns, gpu_job("pausing"))
    running(api_client, ns, "pausing")
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "hyft.io", "v1alpha1", ns, "hunyuanfinetunes", "pausing", {"spec": {"runPolicy": {"suspend": True}}})
    wait_phase(api_client, ns, "pausing", "Suspended")
    wait_for(lambda: (w := workload(api_client, ns, "pausing"))["spec"]["active"] is False
             and not w["status"].get("admission"), what="the Workload deactivated, its quota released")
    create(api_client, ns, gpu_job("meanwhile"))
    running(api_client, ns, "meanwhile")
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "hyft.io", "v1alpha1", ns, "hunyuanfinetunes", "pausing", {"spec": {"runPolicy": {"suspend": False}}})
    wait_phase(api_client, ns, "pausing", "Queued")
    finish(api_client, ns, "meanwhile")
    running(api_client, ns, "pausing")
    finish(api_client, ns, "pausing")
