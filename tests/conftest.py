"""Shared fixtures. The k8s tier runs against a REAL control plane built by
hyft_envtest (etcd, kube-apiserver, kube-scheduler, kube-controller-manager, KWOK)."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

# Subprocesses (hyft train, hyft operator, ...) must run this checkout's code too.
_ROOT = Path(__file__).resolve().parent.parent
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(_ROOT / d) for d in ("operator", "trainer", "envtest")] + [str(_ROOT)]
    + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))

# CPU for every tier, also on a GPU host (the GPU check is `make gpu-check`, a script of its own): two
# local "nodes" would otherwise both take cuda:0.
os.environ["CUDA_VISIBLE_DEVICES"] = ""

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
    from kubernetes import config

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


def _namespace(api_client, prefix):
    from kubernetes import client

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api_client).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture
def namespace(control_plane, api_client):
    """A fresh namespace the operator does NOT watch."""
    from kubernetes import client

    name = _namespace(api_client, "t")
    yield name
    client.CoreV1Api(api_client).delete_namespace(name)


@pytest.fixture(scope="session")
def crds(control_plane):
    from hyft_operator.crdgen import CRD_FILE
    from tests.helpers import ROOT

    control_plane.kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / CRD_FILE))
    control_plane.wait_established("hunyuanfinetunes.hyft.io")
    return control_plane


@pytest.fixture(scope="session")
def operator(crds, gpu_nodes):
    """The operator, in-process (kopf.testing.KopfRunner), watching namespaces op-*."""
    import os

    from kopf.testing import KopfRunner

    os.environ["KUBECONFIG"] = str(crds.kubeconfig)
    os.environ["HYFT_RESYNC_SECONDS"] = "1"
    os.environ["HYFT_SCRAPE_PROGRESS"] = "0"
    args = ["run", "--standalone", "--namespace", "op-*", "-m", "hyft_operator.handlers"]
    with KopfRunner(args, timeout=60) as runner:
        yield runner
    assert runner.exception is None, runner.exception


@pytest.fixture
def op_namespace(operator, api_client):
    """A fresh namespace the in-process operator watches."""
    return _namespace(api_client, "op")
