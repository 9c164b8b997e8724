"""Driving HunyuanFineTune resources on the test control plane (tests of several tiers use them)."""
from __future__ import annotations

from kubernetes import client

from hyft_envtest.kwok import EXIT_CODE_ANNOTATION, REASON_ANNOTATION
from hyft_operator import api
from tests.helpers import wait_for

GVP = (api.GROUP, api.VERSION)


def cpu_job(name="tiny", nodes=2, **spec_changes):
    """A CPU-only job the fake GPU nodes accept (they are tainted, so it tolerates the taint)."""
    spec = {
        "model": {"volume": "shared", "path": "models/tiny"},
        "data": {"files": [{"volume": "shared", "path": "data/chat.jsonl"}]},
        "output": {"volume": "shared", "path": f"runs/{name}"},
        "volumes": [{"name": "shared", "nfs": {"server": "nfs.example", "path": "/export"}}],
        "nodes": nodes,
        "gpusPerNode": 0,
        "training": {"precision": "fp32"},
        "scheduling": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    }
    spec.update(spec_changes)
    return {"apiVersion": f"{api.GROUP}/{api.VERSION}", "kind": api.KIND, "metadata": {"name": name}, "spec": spec}


def create(api_client, namespace, body):
    return client.CustomObjectsApi(api_client).create_namespaced_custom_object(*GVP, namespace, api.PLURAL, body)


def get(api_client, namespace, name):
    return client.CustomObjectsApi(api_client).get_namespaced_custom_object(*GVP, namespace, api.PLURAL, name)


def patch_spec(api_client, namespace, name, spec):
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(*GVP, namespace, api.PLURAL, name,
                                                                       {"spec": spec})


def pods(api_client, namespace, name):
    items = client.CoreV1Api(api_client).list_namespaced_pod(namespace, label_selector=f"hyft.io/job-name={name}")
    return sorted(items.items, key=lambda p: p.metadata.name)


def wait_phase(api_client, namespace, name, phase, timeout=60):
    def reached():
        status = get(api_client, namespace, name).get("status") or {}
        return status if status.get("phase") == phase else None

    return wait_for(reached, timeout=timeout, what=f"{name} phase {phase}")


def exit_pod(api_client, namespace, pod, code, reason=None):
    annotations = {EXIT_CODE_ANNOTATION: str(code)}
    if reason:
        annotations[REASON_ANNOTATION] = reason
    client.CoreV1Api(api_client).patch_namespaced_pod(pod, namespace, {"metadata": {"annotations": annotations}})


# examples/local-tiny.yaml names three claims (the folder each holds).
LOCAL_TINY_CLAIMS = {"hyft-tiny-models": "models", "hyft-sample-data": "data", "hyft-work-rwx": "work"}


def local_tiny_claims(namespace: str, node_folder: str) -> list[dict]:
    """PersistentVolumes on one node's folder, pre-bound to the example's claims. On a
    single node a hostPath is shared by every pod, so it can honestly be ReadWriteMany."""
    docs = []
    for claim, folder in LOCAL_TINY_CLAIMS.items():
        volume = f"{namespace}-{claim}"
        docs.append({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
                     "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                              "storageClassName": "", "hostPath": {"path": f"{node_folder}/{folder}"},
                              "claimRef": {"namespace": namespace, "name": claim}}})
        docs.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                     "metadata": {"name": claim, "namespace": namespace},
                     "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": volume,
                              "resources": {"requests": {"storage": "1Gi"}}}})
    return docs
