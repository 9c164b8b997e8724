"""GPU jobs on the real API server and scheduler (KWOK GPU nodes with an RDMA resource): one pod per
node by default, and the fabric the spec asks for (extra resources, Multus annotations, the node's
network, a RuntimeClass) on the pods as created."""
from __future__ import annotations

import json

import pytest
from kubernetes import client

from hyft_envtest.kwok import gpu_node
from hyft_operator.status import Reason
from hyft_trainer.contract import PLANNED_NODES_ENV
from tests.helpers import wait_for
from tests.jobs import cpu_job, create, get, pods

POOL = {"hyft.io/test-pool": "fabric"}
FABRIC_NODES = ["fabric-node-0", "fabric-node-1"]


@pytest.fixture(scope="module")
def fabric_nodes(control_plane, crds):
    """Two 8-GPU nodes with 4 rdma/ib each, and the nvidia RuntimeClass; removed after."""
    for name in FABRIC_NODES:
        node = gpu_node(name, labels=POOL)
        for key in ("capacity", "allocatable"):
            node["status"][key]["rdma/ib"] = "4"
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(node))
    runtime = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "nvidia"},
               "handler": "nvidia"}
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(runtime))
    yield FABRIC_NODES
    control_plane.kubectl("delete", "runtimeclass", "nvidia", "--wait=false")
    for name in FABRIC_NODES:
        control_plane.kubectl("delete", "node", name, "--wait=false")


def gpu_job(name, nodes, gpus, **spec):
    body = cpu_job(name, nodes=nodes, gpusPerNode=gpus, training={"precision": "bf16"}, **spec)
    body["spec"]["scheduling"] = {"nodeSelector": POOL, **spec.get("scheduling", {})}
    return body


def test_a_gpu_job_gets_its_fabric_and_one_pod_per_node(api_client, op_namespace, fabric_nodes):
    multus = "ib-net-a@ib0, ib-net-b@ib1"
    create(api_client, op_namespace, gpu_job(
        "fabric", 2, 2, network={"hostNetwork": True, "resources": {"rdma/ib": "1"}},
        podMetadata={"annotations": {"k8s.v1.cni.cncf.io/networks": multus}, "labels": {"team": "llm"}},
        scheduling={"runtimeClassName": "nvidia"}))

    def placed():
        found = pods(api_client, op_namespace, "fabric")
        return found if len(found) == 2 and all(p.spec.node_name for p in found) else None

    found = wait_for(placed, what="both fabric pods scheduled")
    assert {p.spec.node_name for p in found} == set(FABRIC_NODES)  # one per node
    for pod in found:
        container = pod.spec.containers[0]
        assert container.resources.requests["rdma/ib"] == container.resources.limits["rdma/ib"] == "1"
        assert container.resources.limits["nvidia.com/gpu"] == "2"
        assert pod.metadata.annotations["k8s.v1.cni.cncf.io/networks"] == multus
        assert pod.metadata.labels["team"] == "llm" and pod.metadata.labels["hyft.io/job-name"] == "fabric"
        assert pod.spec.host_network and pod.spec.dns_policy == "ClusterFirstWithHostNet"
        assert pod.spec.runtime_class_name == "nvidia"
        assert all(p.host_port == p.container_port for p in container.ports)
        env = {e.name: e.value for e in container.env}
        assert env["HYFT_GPUS_PER_NODE"] == "2" and "CUDA_VISIBLE_DEVICES" not in env


def test_a_third_pod_waits_rather_than_share_a_node(api_client, op_namespace, fabric_nodes):
    """Three nodes of one GPU each on a two-node pool: GPUs would fit, the job's anti-affinity does not."""
    create(api_client, op_namespace, gpu_job("spread", 3, 1))

    def unschedulable():
        found = pods(api_client, op_namespace, "spread")
        waiting = [c for p in found for c in p.status.conditions or []
                   if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"]
        return (found, waiting[0]) if len(found) == 3 and waiting else None

    found, condition = wait_for(unschedulable, what="the third pod unschedulable")
    assert "anti-affinity" in condition.message, condition.message
    assert len({p.spec.node_name for p in found if p.spec.node_name}) == 2


def test_a_gang_the_cluster_cannot_place_restarts_on_the_nodes_it_placed(api_client, op_namespace, fabric_nodes,
                                                                          control_plane):
    """runPolicy.resize: the third pod stays unschedulable (two nodes, one pod per node) for 10 s; the gang
    restarts on 2 nodes, the global batch kept (3 nodes x 2 micro-batches = 2 x 3), not counted as a restart.
    A third node comes; 10 s into its run on 2 nodes the gang grows back to 3 (growBackAfterSeconds)."""
    body = gpu_job("shrink", 3, 1, runPolicy={"resize": {"minNodes": 1, "unschedulableSeconds": 10,
                                                        "growBackAfterSeconds": 10}})
    body["spec"]["training"]["gradientAccumulationSteps"] = 2
    create(api_client, op_namespace, body)
    status = wait_for(lambda: (s := get(api_client, op_namespace, "shrink")["status"]).get("phase") == "Running"
                      and s, timeout=120, what="the shrunk gang running")
    assert (status["gangNodes"], status["readyNodes"], status["attempt"], status["restarts"]) == (2, "2/2", 1, 0)
    found = pods(api_client, op_namespace, "shrink")
    assert sorted(p.metadata.name for p in found) == ["shrink-master-0", "shrink-worker-0"]
    for pod in found:
        env = {e.name: e.value for e in pod.spec.containers[0].env}
        assert (env["NNODES"], env[PLANNED_NODES_ENV], pod.metadata.labels["hyft.io/attempt"]) == ("2", "3", "1")
    events = client.CoreV1Api(api_client).list_namespaced_event(
        op_namespace, field_selector="involvedObject.name=shrink").items
    assert any(e.reason == Reason.RESIZED and "restarting on 2 of 3 nodes" in e.message for e in events)

    third = "fabric-node-2"
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(gpu_node(third, labels=POOL)))
    try:
        grown = wait_for(lambda: (s := get(api_client, op_namespace, "shrink")["status"]).get("phase") == "Running"
                         and s.get("readyNodes") == "3/3" and s, timeout=120, what="the gang grown back to 3 nodes")
        assert ("gangNodes" not in grown, grown["attempt"] >= 2, grown["restarts"]) == (True, True, 0)
        found = pods(api_client, op_namespace, "shrink")
        assert {p.metadata.labels["hyft.io/attempt"] for p in found} == {str(grown["attempt"])}
        assert {p.spec.node_name for p in found} == {*fabric_nodes, third}
        events = client.CoreV1Api(api_client).list_namespaced_event(
            op_namespace, field_selector="involvedObject.name=shrink").items
        assert any(e.reason == Reason.GROWING_BACK and "on all 3 nodes" in e.message for e in events)
    finally:
        client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
            "hyft.io", "v1alpha1", op_namespace, "hunyuanfinetunes", "shrink")
        control_plane.kubectl("delete", "node", third, "--wait=false")


def test_cpu_pods_hide_every_gpu(api_client, op_namespace):
    create(api_client, op_namespace, cpu_job("hidden", nodes=1,
                                             env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]))
    found = wait_for(lambda: pods(api_client, op_namespace, "hidden"), what="the CPU pod")
    env = [(e.name, e.value or "") for e in found[0].spec.containers[0].env]  # "" comes back as no value
    # hyft's come last, so they win over the user's (Kubernetes takes the last of a repeated name)
    assert env[-2:] == [("CUDA_VISIBLE_DEVICES", ""), ("NVIDIA_VISIBLE_DEVICES", "void")]
    assert ("HYFT_GPUS_PER_NODE", "0") in env
