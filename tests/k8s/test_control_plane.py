"""The test control plane is a real one: schema + CEL validation, scheduling onto
fake GPU nodes, KWOK pod lifecycle, garbage collection, kubectl, clean teardown."""
from __future__ import annotations

import json
import os

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from hyft_envtest.kwok import EXIT_CODE_ANNOTATION
from hyft_envtest.paths import KUBERNETES_VERSION
from tests.helpers import wait_for

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.envtest.hyft.io"},
    "spec": {
        "group": "envtest.hyft.io",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{
            "name": "v1",
            "served": True,
            "storage": True,
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {
                    "type": "object",
                    "required": ["replicas"],
                    "properties": {
                        "replicas": {"type": "integer", "minimum": 1},
                        "maxReplicas": {"type": "integer"},
                    },
                    "x-kubernetes-validations": [
                        {"rule": "!has(self.maxReplicas) || self.replicas <= self.maxReplicas",
                         "message": "replicas must not exceed maxReplicas", "fieldPath": ".replicas"},
                    ],
                }},
            }},
        }],
    },
}


def test_server_reports_its_real_version(control_plane):
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == KUBERNETES_VERSION
    assert version["clientVersion"]["gitVersion"] == KUBERNETES_VERSION


def test_crd_schema_and_cel_rule_are_enforced(control_plane, api_client, namespace):
    ext = client.ApiextensionsV1Api(api_client)
    try:
        ext.create_custom_resource_definition(WIDGET_CRD)
    except ApiException as err:
        if err.status != 409:
            raise

    # right after its creation a CRD's status may have no conditions: the wait waits (kubectl wait fails)
    control_plane.wait_established("widgets.envtest.hyft.io")
    objects = client.CustomObjectsApi(api_client)

    def create(spec):
        body = {"apiVersion": "envtest.hyft.io/v1", "kind": "Widget",
                "metadata": {"generateName": "w-"}, "spec": spec}
        return wait_for(lambda: _try_create(objects, namespace, body), what="CRD served")

    assert create({"replicas": 2, "maxReplicas": 3})["spec"]["replicas"] == 2
    err = create({"replicas": 5, "maxReplicas": 3})
    assert err.status == 422
    assert "spec.replicas" in err.body and "replicas must not exceed maxReplicas" in err.body
    err = create({"replicas": 0})
    assert err.status == 422 and "spec.replicas" in err.body and "should be greater than or equal to 1" in err.body


def _try_create(objects, namespace, body):
    try:
        return objects.create_namespaced_custom_object("envtest.hyft.io", "v1", namespace, "widgets", body)
    except ApiException as err:
        if err.status == 404:  # the new resource is not served yet
            return None
        return err


def _gpu_pod(name: str, gpus: int) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "main", "image": "busybox",
                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
        },
    }


def test_gpu_pod_is_scheduled_on_a_fake_gpu_node_and_kwok_runs_it(api_client, gpu_nodes, namespace):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, _gpu_pod("trainer", gpus=4))
    pod = wait_for(lambda: (p := core.read_namespaced_pod("trainer", namespace)).status.phase == "Running" and p,
                   what="pod Running")
    assert pod.spec.node_name in gpu_nodes
    assert pod.status.pod_ip

    core.patch_namespaced_pod("trainer", namespace, {"metadata": {"annotations": {EXIT_CODE_ANNOTATION: "0"}}})
    pod = wait_for(lambda: (p := core.read_namespaced_pod("trainer", namespace)).status.phase == "Succeeded" and p,
                   what="pod Succeeded")
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0


def test_kwok_fails_a_pod_with_the_given_exit_code_and_reason(api_client, gpu_nodes, namespace):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, _gpu_pod("oom", gpus=1))
    wait_for(lambda: core.read_namespaced_pod("oom", namespace).status.phase == "Running", what="pod Running")
    core.patch_namespaced_pod("oom", namespace, {"metadata": {"annotations": {
        EXIT_CODE_ANNOTATION: "137", "kwok.hyft.io/reason": "OOMKilled"}}})
    pod = wait_for(lambda: (p := core.read_namespaced_pod("oom", namespace)).status.phase == "Failed" and p,
                   what="pod Failed")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (137, "OOMKilled")


def test_pod_asking_for_more_gpus_than_any_node_is_unschedulable(api_client, gpu_nodes, namespace):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, _gpu_pod("too-big", gpus=16))

    def unschedulable():
        conditions = core.read_namespaced_pod("too-big", namespace).status.conditions or []
        return next((c for c in conditions if c.type == "PodScheduled" and c.reason == "Unschedulable"), None)

    condition = wait_for(unschedulable, what="Unschedulable condition")
    assert "nvidia.com/gpu" in condition.message


def test_deleted_pod_on_fake_node_goes_away(api_client, gpu_nodes, namespace):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, _gpu_pod("short", gpus=1))
    wait_for(lambda: core.read_namespaced_pod("short", namespace).status.phase == "Running", what="pod Running")
    core.delete_namespaced_pod("short", namespace)

    def gone():
        try:
            core.read_namespaced_pod("short", namespace)
            return False
        except ApiException as err:
            return err.status == 404

    wait_for(gone, what="pod removed")


def test_garbage_collector_deletes_owned_objects(api_client, namespace):
    core = client.CoreV1Api(api_client)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "owned", "ownerReferences": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}]}})
    core.delete_namespaced_config_map("owner", namespace)

    def owned_gone():
        return not any(cm.metadata.name == "owned" for cm in core.list_namespaced_config_map(namespace).items)

    wait_for(owned_gone, timeout=90, what="garbage collection of the owned ConfigMap")


def test_rbac_is_enforced_for_a_service_account(control_plane, api_client, namespace):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    client.RbacAuthorizationV1Api(api_client).create_namespaced_role(namespace, {
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]})
    client.RbacAuthorizationV1Api(api_client).create_namespaced_role_binding(namespace, {
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]})
    who = f"system:serviceaccount:{namespace}:reader"

    def can(verb, resource):
        out = control_plane.kubectl("auth", "can-i", verb, resource, "-n", namespace, "--as", who, check=False)
        return out.stdout.strip()

    wait_for(lambda: can("list", "pods") == "yes", what="RBAC binding effective")
    assert can("get", "secrets") == "no"
    assert can("delete", "pods") == "no"


def test_kubectl_get_works_against_it(control_plane, gpu_nodes):
    out = control_plane.kubectl("get", "nodes", "-o", "wide").stdout
    for name in gpu_nodes:
        assert name in out
    capacity = json.loads(control_plane.kubectl("get", "node", gpu_nodes[0], "-o", "json").stdout)["status"]
    assert capacity["allocatable"]["nvidia.com/gpu"] == "8"


def test_stop_leaves_no_process_behind(tmp_path):
    from hyft_envtest.controlplane import ControlPlane

    cp = ControlPlane(workdir=tmp_path).start()
    pids = [p.popen.pid for p in cp.processes]
    assert len(pids) == 2 and all(p.alive() for p in cp.processes)
    cp.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_component_that_cannot_start_is_reported_and_cleaned_up(tmp_path):
    from hyft_envtest.controlplane import ControlPlane, StartupError

    cp = ControlPlane(workdir=tmp_path, extra_apiserver_flags=["--no-such-flag"])
    with pytest.raises(StartupError, match="kube-apiserver exited"):
        cp.start()
    assert cp.processes == []
