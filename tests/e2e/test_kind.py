"""Opt-in: the shipped product on a kind cluster. Builds both images, loads them
into kind, installs the chart with helm, applies examples/local-tiny.yaml (2 CPU
pods, ZeRO-3 + offload, LoRA) unchanged and waits for Succeeded.

    make test-kind        (HYFT_E2E_KIND=1; needs a running Docker engine and kind)

Skipped unless HYFT_E2E_KIND=1 and docker and kind are usable: the trainer image
alone is several GB and takes a while to build.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import pytest
import yaml

from hyft_envtest.paths import binary
from tests.chart import CHART
from tests.helpers import ROOT, wait_for
from tests.jobs import local_tiny_claims

EXAMPLE = ROOT / "examples" / "local-tiny.yaml"
NAMESPACE = "ml"
NODE_MOUNT = "/hyft-e2e"


def docker_usable() -> bool:
    if not (shutil.which("docker") and shutil.which("kind")):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


pytestmark = pytest.mark.skipif(
    os.environ.get("HYFT_E2E_KIND") != "1" or not docker_usable(),
    reason="opt-in kind test: set HYFT_E2E_KIND=1 on a machine with Docker and kind (make test-kind)")


def sh(*cmd, timeout=1800, **kwargs):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def host_folder(tmp_path_factory):
    """The tiny model, the sample data and an empty work folder, mounted into the kind node."""
    from hyft_trainer.tiny import build

    root = tmp_path_factory.mktemp("kind")
    build(root / "models" / "tiny-small", "small")
    shutil.copytree(ROOT / "examples" / "data", root / "data")
    (root / "work").mkdir()
    for path in [root, *root.rglob("*")]:  # the trainer runs as uid 1000; hostPath ignores fsGroup
        path.chmod(0o777 if path.is_dir() else 0o666)
    return root


@pytest.fixture(scope="module")
def images():
    tag = "e2e"
    sh("docker", "build", "-f", ROOT / "docker" / "operator.Dockerfile", "-t", f"hyft-operator:{tag}", ROOT)
    sh("docker", "build", "-f", ROOT / "docker" / "trainer.Dockerfile", "-t", f"hyft-trainer:{tag}", ROOT,
       timeout=3600)
    return {"operator": f"hyft-operator:{tag}", "trainer": f"hyft-trainer:{tag}"}


@pytest.fixture(scope="module")
def cluster(host_folder, images, tmp_path_factory):
    from hyft_envtest.build import ensure

    ensure(["kubernetes", "helm"])  # our kubectl and helm
    name = f"hyft-e2e-{uuid.uuid4().hex[:6]}"
    workdir = tmp_path_factory.mktemp("kind-config")
    kubeconfig = workdir / "kubeconfig"
    config = workdir / "kind.yaml"
    config.write_text(yaml.safe_dump({
        "kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4",
        "nodes": [{"role": "control-plane",
                   "extraMounts": [{"hostPath": str(host_folder), "containerPath": NODE_MOUNT}]}]}))
    sh("kind", "create", "cluster", "--name", name, "--config", config, "--kubeconfig", kubeconfig, "--wait", "180s")
    try:
        for image in images.values():
            sh("kind", "load", "docker-image", image, "--name", name)
        yield kubeconfig
    finally:
        subprocess.run(["kind", "delete", "cluster", "--name", name], capture_output=True, timeout=300)


def kubectl(kubeconfig, *args, **kwargs):
    return sh(binary("kubectl"), "--kubeconfig", kubeconfig, *args, **kwargs)


def diagnostics(kubeconfig) -> str:
    parts = []
    for args in (["get", "hft,pods", "-A", "-o", "wide"], ["describe", "hft", "-n", NAMESPACE],
                 ["describe", "pods", "-n", NAMESPACE], ["logs", "-n", NAMESPACE, "-l", "hyft.io/job-name",
                                                         "--tail", "80", "--prefix"],
                 ["logs", "-n", "hyft-system", "-l", "app.kubernetes.io/name=hyft-operator", "--tail", "80"]):
        proc = subprocess.run([str(binary("kubectl")), "--kubeconfig", str(kubeconfig), *args],
                              capture_output=True, text=True, timeout=60)
        parts.append(f"$ kubectl {' '.join(args)}\n{proc.stdout}{proc.stderr}")
    return "\n".join(parts)


def test_chart_installs_and_the_tiny_example_succeeds_on_kind(cluster, images, host_folder):
    repository, tag = images["operator"].split(":")
    sh(binary("helm"), "--kubeconfig", cluster, "install", "hyft", CHART, "-n", "hyft-system", "--create-namespace",
       "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
       "--set", f"trainer.image={images['trainer']}", "--set", "trainer.imagePullPolicy=Never",
       "--wait", "--timeout", "5m")  # --wait: the operator's readiness probe passes
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            *local_tiny_claims(NAMESPACE, NODE_MOUNT)]
    kubectl(cluster, "apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in docs))
    kubectl(cluster, "apply", "-n", NAMESPACE, "-f", EXAMPLE)

    def phase():
        out = json.loads(kubectl(cluster, "get", "hft", "local-tiny", "-n", NAMESPACE, "-o", "json"))
        current = (out.get("status") or {}).get("phase")
        if current == "Failed":
            raise AssertionError(f"the job failed: {out['status'].get('message')}\n{diagnostics(cluster)}")
        return current == "Succeeded"

    try:
        wait_for(phase, timeout=1800, interval=10, what="local-tiny Succeeded on kind")
    except AssertionError as err:
        raise AssertionError(f"{err}\n{diagnostics(cluster)}") from None
    report = json.loads((host_folder / "work" / "local-tiny" / "report.json").read_text())
    assert report["steps"] == 30 and report["world_size"] == 2
    assert (host_folder / "work" / "local-tiny" / "export" / "adapter_config.json").exists()
