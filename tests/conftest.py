"""Shared fixtures. The k8s tier runs against a REAL control plane built by
hyft_envtest (etcd, kube-apiserver, kube-scheduler, kube-controller-manager, KWOK)."""
from __future__ import annotations

import shutil
import uuid

import pytest

TIERS = ("unit", "k8s", "trainer", "e2e", "gpu")


def pytest_collection_modifyitems(items):
    """The folder a test lives in (tests/<tier>/...) is its tier marker."""
    for item in items:
        tier = item.path.parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    """One full control plane for the session; tests isolate by namespace."""
    if shutil.which("go") is None:
        pytest.skip("no Go toolchain: the control plane is built from Go modules")
    from hyft_envtest.build import ensure
    from hyft_envtest.controlplane import ControlPlane

    ensure()
    cp = ControlPlane(workdir=tmp_path_factory.mktemp("envtest"), scheduler=True, controller_manager=True,
                      kwok=True)
    cp.start()
    print(f"\ncontrol plane started in {cp.startup_seconds:.1f}s")
    yield cp
    cp.stop()


@pytest.fixture(scope="session")
def api_client(control_plane):
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    yield api
    api.close()


@pytest.fixture(scope="session")
def gpu_nodes(control_plane):
    """Two fake 8-GPU nodes (tainted nvidia.com/gpu=present:NoSchedule)."""
    import json

    from hyft_envtest.kwok import gpu_node

    names = ["gpu-node-0", "gpu-node-1"]
    for name in names:
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(gpu_node(name)))
    return names


@pytest.fixture
def namespace(control_plane, api_client):
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api_client).create_namespace({"metadata": {"name": name}})
    yield name
    client.CoreV1Api(api_client).delete_namespace(name)
