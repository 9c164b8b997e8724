"""The shipped product as a user runs it: both images built, a real node (kubelet +
containerd + runc + CNI + CoreDNS) joined to the test control plane, the chart's
operator running as a pod, and examples/local-tiny.yaml running as real pods.

The README's "Quickstart on a real cluster" is these steps: `make images`, `helm
install` of charts/hyft-operator with those images, the example's three claims, and
`kubectl apply -f examples/local-tiny.yaml`. Tests here run in file order and share
one node; each prints the cluster's state and the node's logs when it fails.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from hyft_envtest import images as image_build
from hyft_envtest.build import ensure
from hyft_envtest.paths import binary
from hyft_envtest.realnode import NODE_IP, RealNode, runtime_cgroups
from hyft_trainer.contract import log_file
from tests.chart import CHART, dashboard_queries, render
from tests.helpers import ROOT, wait_for
from tests.jobs import local_tiny_claims
from tests.prometheus import Prometheus, pod_monitor_job, pod_monitor_targets

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a real node needs root (namespaces, mounts, cgroups)")

EXAMPLE = ROOT / "examples" / "local-tiny.yaml"
NAMESPACE = "ml"
OPERATOR_NAMESPACE = "hyft-system"
TRAINER_UID, OPERATOR_UID = 1000, 10001


# ---- fixtures ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def docker_engine():
    """A Docker engine for the module (the node imports from it); the last test stops it early to
    check that it, too, leaves nothing behind (closing twice is harmless)."""
    with contextlib.ExitStack() as engine:
        engine.enter_context(image_build.docker_engine())
        yield engine


@pytest.fixture(scope="module")
def built_images(docker_engine):
    """Both images (cached by the engine: seconds when nothing changed)."""
    started = time.monotonic()
    built = image_build.build_all()
    print(f"images ready in {time.monotonic() - started:.0f}s: {built}")
    return built


@pytest.fixture(scope="module")
def node(built_images, tmp_path_factory):
    ensure(["kubernetes", "kubelet", "containerd", "runc", "coredns", "pause", "helm"])
    real = RealNode(tmp_path_factory.mktemp("real-node"))
    real.start()
    try:
        started = time.monotonic()
        for reference in built_images.values():
            real.load_image(reference)
        print(f"real node up in {real.startup_seconds:.0f}s, images imported in {time.monotonic() - started:.0f}s")
        yield real
    finally:
        real.stop()


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """The example's three claims' folders: the tiny model, the sample data, an empty work folder."""
    from hyft_trainer.tiny import build

    root = tmp_path_factory.mktemp("volumes")
    build(root / "models" / "tiny-small", "small")
    shutil.copytree(ROOT / "examples" / "data", root / "data")
    (root / "work").mkdir()
    for path in [root, *root.rglob("*")]:  # the trainer runs as uid 1000; hostPath ignores fsGroup
        path.chmod(0o777 if path.is_dir() else 0o666)
    return root


@pytest.fixture
def prometheus(node, tmp_path_factory):
    """Scrapes the trainer pods by pod IP, the ones the chart's PodMonitor selects (the
    targets are refreshed every second from the API, as prometheus-operator would)."""
    pod_monitor = next(d for d in render(node.control_plane, "--set", "metrics.podMonitor.enabled=true")
                       if d["kind"] == "PodMonitor")
    workdir = tmp_path_factory.mktemp("prometheus")
    targets = workdir / "pod-monitor-targets.json"
    targets.write_text("[]")
    stop = threading.Event()

    def refresh():
        while not stop.wait(1):
            proc = subprocess.run([str(binary("kubectl")), "--kubeconfig", str(node.kubeconfig), "get", "pods",
                                   "-A", "-o", "json"], capture_output=True, text=True, timeout=30)
            if proc.returncode == 0:
                groups = pod_monitor_targets(pod_monitor, json.loads(proc.stdout)["items"])
                (workdir / "targets.tmp").write_text(json.dumps(groups))
                (workdir / "targets.tmp").replace(targets)

    refresher = threading.Thread(target=refresh, daemon=True)
    refresher.start()
    prom = Prometheus(workdir, [pod_monitor_job(pod_monitor, targets)], namespace=node.namespace)
    yield prom
    stop.set()
    refresher.join(30)
    prom.stop()


# ---- helpers ------------------------------------------------------------------------
def kubectl(node, *args, input=None, check=True, timeout=120):
    proc = subprocess.run([str(binary("kubectl")), "--kubeconfig", str(node.kubeconfig), *args],
                          capture_output=True, text=True, input=input, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}\n{diagnostics(node)}"
    return proc.stdout


def get_json(node, *args):
    return json.loads(kubectl(node, "get", *args, "-o", "json"))


def diagnostics(node) -> str:
    parts = []
    for args in (["get", "hft,pods,pvc", "-A", "-o", "wide"], ["describe", "hft", "-n", NAMESPACE],
                 ["describe", "pods", "-n", NAMESPACE], ["describe", "pods", "-n", OPERATOR_NAMESPACE],
                 ["logs", "-n", NAMESPACE, "-l", "hyft.io/job-name", "--tail", "60", "--prefix"],
                 ["logs", "-n", OPERATOR_NAMESPACE, "-l", "app.kubernetes.io/name=hyft-operator", "--tail", "60",
                  "--prefix"], ["get", "events", "-A", "--sort-by", ".lastTimestamp"]):
        proc = subprocess.run([str(binary("kubectl")), "--kubeconfig", str(node.kubeconfig), *args],
                              capture_output=True, text=True, timeout=60)
        parts.append(f"$ kubectl {' '.join(args)}\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}")
    return "\n".join(parts) + "\n" + node.log_tails()


def wait(node, predicate, timeout, what, interval=1.0):
    try:
        return wait_for(predicate, timeout=timeout, interval=interval, what=what)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{diagnostics(node)}") from None


def status(node, name):
    return get_json(node, "hft", name, "-n", NAMESPACE).get("status") or {}


def variant(tmp_path, name, *, data_path=None, **training) -> Path:
    """The example under another name, with other step counts or data path."""
    resource = yaml.safe_load(EXAMPLE.read_text())
    resource["metadata"]["name"] = name
    resource["spec"]["output"]["path"] = name
    resource["spec"]["training"].update(training)
    if data_path:
        resource["spec"]["data"]["files"][0]["path"] = data_path
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(resource))
    return path


def follow(node, name, timeout):
    """Poll the job until it finishes; returns (final status, phases seen in order, progress seen while Running)."""
    phases, progress = [], []

    def finished():
        current = status(node, name)
        phase = current.get("phase")
        if phase and (not phases or phases[-1] != phase):
            phases.append(phase)
        if phase == "Running" and (current.get("progress") or {}).get("step"):
            progress.append((time.time(), current["progress"]))
        return current if phase in ("Succeeded", "Failed") else None

    final = wait(node, finished, timeout, f"{name} finished")
    return final, phases, progress


def trainer_pods(node, name):
    return get_json(node, "pods", "-n", NAMESPACE, "-l", f"hyft.io/job-name={name}")["items"]


# ---- the tests ------------------------------------------------------------------------
def test_images_run_as_documented(built_images):
    trainer, operator = built_images["trainer"], built_images["operator"]

    def run(image, *args, entrypoint=None):
        cmd = ["docker", "run", "--rm", "--network", "none", *(["--entrypoint", entrypoint] if entrypoint else []),
               image, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        return proc.stdout

    assert "usage: hyft train" in run(trainer, "train", "--help")
    assert "usage: hyft operator" in run(operator, "operator", "--help")
    assert run(trainer, "-u", entrypoint="id").strip() == str(TRAINER_UID)
    assert run(operator, "-u", entrypoint="id").strip() == str(OPERATOR_UID)
    no_torch = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "python3", operator,
                               "-c", "import torch"], capture_output=True, text=True, timeout=120)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    probe = ("import deepspeed.git_version_info_installed as info, glob; "
             "print(info.accelerator_name, info.installed_ops['cpu_adam'], "
             "sorted(p.split('/')[-2] for p in glob.glob('/opt/torch-extensions/*/*.so')))")
    accelerator, cpu_adam, cpu_ops = run(trainer, "-c", probe, entrypoint="python3").strip().splitlines()[-1].split(
        " ", 2)
    assert (accelerator, cpu_adam) == ("cuda", "1")  # prebuilt for GPU nodes
    assert "cpu_adam" in cpu_ops and "deepspeed_shm_comm" in cpu_ops  # and for CPU nodes
    # CPU-Adam (GPU and CPU builds) for the documented baseline, never the build machine's -march=native
    compiles = [line for line in run(trainer, "/opt/venv/share/hyft/cpu-ops-build.log", entrypoint="cat").splitlines()
                if " -c " in line]
    adam = [c for c in compiles if "cpu_adam" in c]  # the GPU nodes' prebuilt op and the CPU nodes' JIT build
    assert len(adam) >= 4 and all("-march=x86-64-v3" in c and "-D__AVX512__" not in c for c in adam)
    assert any("shm" in c for c in compiles) and not any("-march=native" in c for c in compiles)
    # rdma-core's libraries, for NCCL's InfiniBand/RoCE/EFA transports
    libraries = run(trainer, "-p", entrypoint="ldconfig")
    assert all(lib in libraries for lib in ("libibverbs.so.1", "librdmacm.so.1", "libmlx5.so.1", "libefa.so.1"))
    # the pip CA bundle handed to the build stage is not in the image
    assert run(trainer, "-c", "import glob; print(glob.glob('/tmp/pip-ca/*'))", entrypoint="python3").strip() == "[]"


def test_the_chart_installs_and_the_operator_runs_as_a_locked_down_pod(node, built_images):
    repository, tag = built_images["operator"].split(":")
    helm = subprocess.run([str(binary("helm")), "--kubeconfig", str(node.kubeconfig), "install", "hyft", str(CHART),
                           "-n", OPERATOR_NAMESPACE, "--create-namespace", "--set", f"image.repository={repository}",
                           "--set", f"image.tag={tag}", "--set", f"trainer.image={built_images['trainer']}",
                           "--wait", "--timeout", "5m"], capture_output=True, text=True, timeout=400)
    assert helm.returncode == 0, f"{helm.stdout}{helm.stderr}\n{diagnostics(node)}"
    deployment = get_json(node, "deployment", "-n", OPERATOR_NAMESPACE, "hyft-hyft-operator")
    available = {c["type"]: c["status"] for c in deployment["status"]["conditions"]}
    assert available["Available"] == "True" and deployment["status"]["readyReplicas"] == 2
    pods = get_json(node, "pods", "-n", OPERATOR_NAMESPACE, "-l", "app.kubernetes.io/name=hyft-operator")["items"]
    for pod in pods:
        assert pod["spec"]["serviceAccountName"] == "hyft-hyft-operator"
        assert pod["spec"]["nodeName"] == "hyft-node"
        name = pod["metadata"]["name"]
        uid = kubectl(node, "exec", "-n", OPERATOR_NAMESPACE, name, "--", "id", "-u").strip()
        assert uid == str(OPERATOR_UID)
        read_only = subprocess.run([str(binary("kubectl")), "--kubeconfig", str(node.kubeconfig), "exec", "-n",
                                    OPERATOR_NAMESPACE, name, "--", "touch", "/opt/x"],
                                   capture_output=True, text=True, timeout=60)
        assert read_only.returncode != 0 and "Read-only file system" in read_only.stderr


def test_the_example_trains_as_two_real_pods_to_success(node, volumes, prometheus, built_images):
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            *local_tiny_claims(NAMESPACE, str(volumes))]
    kubectl(node, "apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in docs))
    started = time.time()
    kubectl(node, "apply", "-n", NAMESPACE, "-f", str(EXAMPLE))  # unchanged

    final, phases, progress = follow(node, "local-tiny", timeout=1200)
    assert final["phase"] == "Succeeded", f"{final}\n{diagnostics(node)}"
    assert phases[0] == "Pending" and "Running" in phases and phases[-1] == "Succeeded", phases
    out = volumes / "work" / "local-tiny"
    report = json.loads((out / "report.json").read_text())
    # scraped from the live trainer (every 5 s while Running)
    assert progress and 0 < progress[-1][1]["step"] <= 30, (progress, final, report["train_runtime"])
    assert final["restarts"] == 0

    pods = {p["metadata"]["name"]: p for p in trainer_pods(node, "local-tiny")}
    assert set(pods) == {"local-tiny-master-0", "local-tiny-worker-0"}
    worker_env = {e["name"]: e.get("value") for e in pods["local-tiny-worker-0"]["spec"]["containers"][0]["env"]}
    # the worker found the master by its DNS name (CoreDNS on the node), not by an address
    assert worker_env["MASTER_ADDR"] == f"local-tiny-master-0.local-tiny.{NAMESPACE}.svc"
    assert all(p["spec"]["containers"][0]["image"] == built_images["trainer"] for p in pods.values())
    assert pods["local-tiny-master-0"]["status"]["podIP"] != pods["local-tiny-worker-0"]["status"]["podIP"]

    assert report["steps"] == 30 and report["world_size"] == 2
    assert report["preflight_seconds"] > 0
    preflight = next(c for c in final["conditions"] if c["type"] == "PreflightPassed")
    assert (preflight["status"], preflight["reason"]) == ("True", "Passed"), preflight  # from the live master
    assert (out / "export" / "adapter_config.json").exists()

    # the dashboard's progress and loss panels, as Grafana asks with $hyft_job=local-tiny, while it ran
    queries = dashboard_queries("local-tiny")
    scraped = prometheus.sample_times('hyft_train_loss{hyft_job="local-tiny"}', started, time.time())
    assert scraped, f"Prometheus never scraped the trainers' loss\n{diagnostics(node)}"
    at = scraped[len(scraped) // 2]
    for title in ("Progress", "Loss"):
        for query in queries[title]:
            if "eval_loss" in query:
                continue  # the example has no validation split (test_prometheus.py covers eval loss)
            assert prometheus.query(query, at=at), f"no data for {title}: {query}"
    pods_scraped = {r["metric"]["pod"] for r in prometheus.query('hyft_train_global_step{hyft_job="local-tiny"}',
                                                                 at=at)}
    assert pods_scraped == {"local-tiny-master-0", "local-tiny-worker-0"}


def test_deleting_a_worker_mid_training_checkpoints_and_restarts_the_gang(node, volumes, tmp_path):
    from hyft_trainer.checkpoints import newest_complete, step_of

    name, steps = "local-tiny-restart", 200
    kubectl(node, "apply", "-n", NAMESPACE, "-f", str(variant(tmp_path, name, maxSteps=steps)))
    out = volumes / "work" / name
    # past the first periodic checkpoint (saveSteps 10), so the SIGTERM one is a later step
    wait(node, lambda: (c := newest_complete(out)) is not None and step_of(c) >= 10, 900, "checkpoint-10")
    kubectl(node, "delete", "pod", "-n", NAMESPACE, f"{name}-worker-0", "--wait=false")

    final, _, _ = follow(node, name, timeout=1200)
    # the master's trainer stopped early with a checkpoint (a disruption), or the operator saw the worker
    # vanish first (a counted restart): one restart either way
    assert final["phase"] == "Succeeded" and final["restarts"] + final.get("disruptions", 0) == 1, \
        f"{final}\n{diagnostics(node)}"
    assert final.get("attempt") == 1
    assert {p["metadata"]["labels"]["hyft.io/attempt"] for p in trainer_pods(node, name)} == {"1"}
    report = json.loads((out / "report.json").read_text())
    # the new gang resumed from the checkpoint the SIGTERM made: complete, and past the periodic one
    resumed = step_of(Path(report["resumed_from"] or "none"))
    assert report["steps"] == steps and resumed is not None and resumed >= 10, report
    # the first gang's logs outlived its pods, next to the second gang's
    for attempt in (0, 1):
        for pod in (f"{name}-master-0", f"{name}-worker-0"):
            assert "hyft: node" in (out / log_file(attempt, pod)).read_text(), (attempt, pod)


def test_a_suspended_job_patched_to_one_node_resumes_its_checkpoint_there(node, volumes, tmp_path):
    """The 2-node example, suspended past a checkpoint, patched to nodes: 1 and resumed: one pod picks the
    2-rank ZeRO checkpoint up (converted to a universal one), keeps the global batch and finishes."""
    from hyft_trainer.checkpoints import newest_complete, step_of

    name, steps = "local-tiny-resize", 200
    kubectl(node, "apply", "-n", NAMESPACE, "-f", str(variant(tmp_path, name, maxSteps=steps)))
    out = volumes / "work" / name
    wait(node, lambda: (c := newest_complete(out)) is not None and step_of(c) >= 10, 900, "checkpoint-10")

    def patch(spec):
        kubectl(node, "patch", "hft", name, "-n", NAMESPACE, "--type", "merge", "-p", json.dumps({"spec": spec}))

    patch({"runPolicy": {"suspend": True}})
    wait(node, lambda: status(node, name).get("phase") == "Suspended" and not trainer_pods(node, name), 600,
         "suspended, its pods gone")
    patch({"nodes": 1})
    patch({"runPolicy": {"suspend": False}})
    final, _, _ = follow(node, name, timeout=1200)
    assert final["phase"] == "Succeeded", f"{final}\n{diagnostics(node)}"
    assert [p["metadata"]["name"] for p in trainer_pods(node, name)] == [f"{name}-master-0"]
    report = json.loads((out / "report.json").read_text())
    assert (report["world_size"], report["resumed_from_world_size"], report["steps"]) == (1, 2, steps), report
    log = (out / log_file(final["attempt"], f"{name}-master-0")).read_text()
    assert "gradient_accumulation_steps 1 -> 2 keeps the global batch of 4" in log


def test_a_missing_data_file_fails_at_once_without_a_restart(node, volumes, tmp_path):
    name = "local-tiny-nodata"
    kubectl(node, "apply", "-n", NAMESPACE, "-f", str(variant(tmp_path, name, data_path="no-such-file.jsonl")))
    final, _, _ = follow(node, name, timeout=600)
    assert final["phase"] == "Failed" and final["restarts"] == 0, final
    said = final["message"] + (final.get("lastFailure") or {}).get("message", "")
    assert "no-such-file.jsonl" in said, final
    # the trainer's exit code, as the operator read it from the pod before removing the gang
    failure = final["lastFailure"]
    assert failure["exitCode"] == 2 and failure["retryable"] is False, failure
    # the message names the failed pod's log, kept on the output volume after the pods are gone
    log = log_file(0, failure["pod"])
    assert f"its log: {name}/{log} on volume" in final["message"], final["message"]
    assert "no-such-file.jsonl" in (volumes / "work" / name / log).read_text()


def test_stopping_the_node_leaves_nothing_behind(node, docker_engine):
    workdir = node.workdir
    namespace = node.namespace
    kubectl(node, "delete", "namespace", NAMESPACE, "--wait=true", timeout=300)
    node.stop()
    docker_engine.close()  # a dockerd this run started (none if one was already running) stops too
    assert namespace.holder.poll() is not None
    with open("/proc/self/mounts") as mounts:  # the image builds' dockerd left nothing mounted either
        assert not [m for m in mounts if str(workdir) in m or NODE_IP in m or "hyft-dockerd-" in m]
    leftovers = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cgroups = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        # every component, shim and forwarder names the workdir; every container sits in a k8s.io cgroup
        if str(workdir) in cmdline or "/k8s.io" in cgroups:
            leftovers.append(cmdline)
    assert not leftovers
    assert runtime_cgroups() <= node.cgroups_before
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "hyft-node" not in links and "hyft-pods0" not in links
