"""hyft under a real Kueue (built from its Go module, its webhooks served to the API server, its
visibility API through the API server's aggregator): a ClusterQueue of 16 GPUs on two KWOK 8-GPU nodes,
2x8-GPU jobs that wait their turn as Queued (their place in line said), run when admitted (on the
admitted flavor's nodes), give way to a job of a higher priority (a Kueue WorkloadPriorityClass)
without losing a restart, and come back when the preemptor finishes; a queued job resized to what the
quota has left runs; an operator restarted while jobs are queued changes nothing."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from hyft_envtest.controlplane import free_port
from hyft_envtest.kueue import Kueue
from hyft_envtest.kwok import gpu_node
from hyft_operator import builders, kueue
from hyft_operator.reconciler import Reconciler
from hyft_operator.status import Reason
from tests.helpers import wait_for
from tests.jobs import cpu_job, create, exit_pod, get, patch_spec, pods, wait_phase

POOL = {"hyft.io/test-pool": "kueue"}
NODES = ["kueue-node-0", "kueue-node-1"]
QUEUE = "gpus"
PRIORITIES = {"training-low": 100, "training-mid": 500}  # PriorityClasses: the pods' and their Workloads'
URGENT = "training-urgent"  # a Kueue WorkloadPriorityClass: the Workload's alone


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
        apply(control_plane, {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "WorkloadPriorityClass",
                              "metadata": {"name": URGENT}, "value": 1000})
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


@contextlib.contextmanager
def local_queue(control_plane, namespace):
    apply(control_plane, {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
                          "metadata": {"name": QUEUE, "namespace": namespace},
                          "spec": {"clusterQueue": "cluster-gpus"}})
    yield namespace
    # the quota goes with the jobs (their Workloads are collected with them): the next test starts afresh
    control_plane.kubectl("delete", "hunyuanfinetunes", "--all", "-n", namespace, "--wait=false")


@pytest.fixture
def queue_namespace(kueue_cluster, op_namespace):
    with local_queue(kueue_cluster, op_namespace):
        yield op_namespace


def gpu_job(name, priority="training-low"):
    # no nodeSelector of its own: the pods land where Kueue's flavor says
    scheduling = {"queueName": QUEUE}
    scheduling["workloadPriorityClassName" if priority == URGENT else "priorityClassName"] = priority
    return cpu_job(name, nodes=2, gpusPerNode=8, scheduling=scheduling)


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


def finish(api_client, namespace, name, nodes=2):
    for rank in reversed(range(nodes)):  # as trainers do: the whole gang exits (and frees its GPUs)
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

    finish(api_client, ns, "first")
    running(api_client, ns, "second")
    victims = {p.metadata.name: p.metadata.uid for p in pods(api_client, ns, "second")}

    create(api_client, ns, gpu_job("urgent", priority=URGENT))  # Kueue's priority class alone: 1000
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


def test_a_queued_job_resized_to_what_the_quota_has_left_runs(api_client, queue_namespace):
    """8 of the 16 GPUs taken; a 2x8 job waits for 8 more; patched to 1 node while queued (no suspend),
    its Workload is remade at 1x8, admitted, and the job runs on 1 node."""
    ns = queue_namespace
    holder = gpu_job("holder")
    holder["spec"]["nodes"] = 1
    create(api_client, ns, holder)
    wait_phase(api_client, ns, "holder", "Running", timeout=90)
    create(api_client, ns, gpu_job("wide"))
    wait_for(lambda: "8 more needed" in status_message(api_client, ns, "wide"), what="wide queued for 8 more GPUs")
    patch_spec(api_client, ns, "wide", {"nodes": 1})
    status = wait_phase(api_client, ns, "wide", "Running", timeout=90)
    assert (status["readyNodes"], status["restarts"]) == ("1/1", 0)
    assert [p.metadata.name for p in pods(api_client, ns, "wide")] == ["wide-master-0"]
    assert [s["count"] for s in workload(api_client, ns, "wide")["spec"]["podSets"]] == [1]
    with pytest.raises(client.ApiException) as refused:  # running: the size is fixed again
        patch_spec(api_client, ns, "wide", {"nodes": 2})
    assert refused.value.status == 422 and "queued or restarting between attempts" in refused.value.body
    for name in ("holder", "wide"):
        finish(api_client, ns, name, nodes=1)


def test_queued_jobs_of_one_local_queue_share_one_visibility_request(api_client, queue_namespace):
    ns = queue_namespace
    reconciler = Reconciler(api_client, builders.OperatorDefaults(), scrape_progress=False)
    calls = []
    real = reconciler.custom.api_client.call_api
    reconciler.custom.api_client.call_api = lambda *a, **k: calls.append(a[1]) or real(*a, **k)
    for name in ("a", "b"):  # not in Kueue's line: no place, but the answer is Kueue's
        assert reconciler._queue_position(ns, QUEUE, name) is None
    assert len(calls) == 1 and calls[0].endswith(f"/namespaces/{ns}/localqueues/{QUEUE}/pendingworkloads"), calls


@contextlib.contextmanager
def operator_process(control_plane, namespace, log_path):
    """`hyft operator` watching one namespace; stopped with SIGTERM, as a Deployment's rollout stops it."""
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig), "HYFT_RESYNC_SECONDS": "1",
           "HYFT_SCRAPE_PROGRESS": "0", "HYFT_METRICS_PORT": str(port)}
    with open(log_path, "a") as log:
        proc = subprocess.Popen([sys.executable, "-m", "hyft_operator.cli", "operator", "--standalone",
                                 "--namespace", namespace], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield port
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                assert proc.wait(30) == 0
            finally:
                proc.kill()
                proc.wait()


def status_message(api_client, namespace, name):
    message = (get(api_client, namespace, name).get("status") or {}).get("message", "")
    print(f"{name}: {message}")  # the last one is in the report when a wait times out
    return message


def operator_metrics(port):
    """The operator's jobs by phase, and its successful reconciles; {} while it does not answer yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    figures = {s.labels["phase"]: s.value for s in samples if s.name == "hyft_operator_jobs"}
    figures["reconciled"] = sum(s.value for s in samples
                                if s.name == "hyft_operator_reconciles_total" and s.labels["result"] == "ok")
    return figures


def test_queued_jobs_show_their_place_and_an_operator_restart_changes_nothing(api_client, kueue_cluster, tmp_path):
    """Two jobs queued behind a running one show their places in line. A real restart (a new process: no
    caches, Kopf's watches and indexes rebuilt) leaves the running gang, the queued jobs and their Workloads
    as they are; the new process then carries on, the places moving up."""
    ns = f"kq-{tmp_path.name[-8:].lower().replace('_', '')}"
    client.CoreV1Api(api_client).create_namespace({"metadata": {"name": ns}})
    log = tmp_path / "operator.log"
    with local_queue(kueue_cluster, ns):
        with operator_process(kueue_cluster, ns, log):
            create(api_client, ns, gpu_job("first", priority="training-mid"))
            running(api_client, ns, "first")
            # Kueue orders a queue by priority, then by creation time to the second: distinct priorities make
            # the line certain (and the running job, of the higher one, is not preempted)
            for place, (name, priority) in enumerate((("second", "training-mid"), ("third", "training-low")), 1):
                create(api_client, ns, gpu_job(name, priority=priority))
                # its place in line, as Kueue's visibility API (through the API server's aggregator) gives it
                said = f"number {place} there and {place} in its ClusterQueue"
                wait_for(lambda name=name, said=said: said in status_message(api_client, ns, name),
                         what=f"{name} queued with its place in line ({said})")

        def state():
            names = ("first", "second", "third")
            jobs = {name: get(api_client, ns, name)["metadata"]["resourceVersion"] for name in names}
            workloads = {name: (w["metadata"]["uid"], w["metadata"]["generation"], w["spec"]["active"])
                         for name in names for w in [workload(api_client, ns, name)]}
            gang = sorted(p.metadata.uid for p in pods(api_client, ns, "first"))
            return jobs, workloads, gang, pods(api_client, ns, "second")

        before = state()
        with operator_process(kueue_cluster, ns, log) as port:
            # every job reconciled at least twice by the new process: a change made by its first pass is seen
            wait_for(lambda: (m := operator_metrics(port)).get("Running") == 1 and m.get("Queued") == 2
                     and m["reconciled"] >= 6, what="the restarted operator's passes over the jobs")
            assert state() == before
            finish(api_client, ns, "first")
            running(api_client, ns, "second")
            wait_for(lambda: "number 1 there and 1 in its ClusterQueue" in status_message(api_client, ns, "third"),
                     what="third moved up to first in line")
            finish(api_client, ns, "second")
            running(api_client, ns, "third")
            finish(api_client, ns, "third")
    client.CoreV1Api(api_client).delete_namespace(ns)
    assert "Traceback" not in log.read_text(), log.read_text()
