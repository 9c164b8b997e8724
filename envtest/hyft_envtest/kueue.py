"""Kueue's controller manager against the test control plane, built from its Go module like the
other binaries (build.py), with its own CRDs and its kueue.x-k8s.io webhooks (defaulting and
validation of Workloads, ClusterQueues, ...) served to the API server over loopback.

    with Kueue(control_plane) as kueue: ...

Kueue serves webhooks with the certificate in webhook.certDir (the control plane's serving
certificate: it names 127.0.0.1), and the webhook configurations call it by URL, with the control
plane's CA. Without its internal certificate management, Kueue reads a metrics certificate from the
fixed path /etc/kueue/metrics/certs: it runs in a mount namespace of its own where /etc is an
overlay holding that folder, so nothing is written to the host's /etc and nothing outlives it.
Its visibility server (the pending workloads' positions) reads its certificate from the fixed path
/visibility: in that namespace Kueue runs chrooted in a tmpfs holding that folder and every top-level
folder of the host, bound. The API server reaches it through Kueue's own APIService, whose Service
is an ExternalName to localhost (the aggregator dials an ExternalName as given; an Endpoints
address may not be loopback).
Only the kueue.x-k8s.io webhooks are registered: hyft hands Kueue Workloads itself, Kueue manages
no Job, pod or other framework here.
"""
from __future__ import annotations

import functools
import json
import os
import shlex
from pathlib import Path

import yaml

from .controlplane import ControlPlane, Process, free_port
from .paths import KUEUE_VERSION, binary

NAMESPACE = "kueue-system"
KUEUE_GROUP = "kueue.x-k8s.io"


@functools.cache
def module_dir() -> Path:
    from .build import run

    return Path(json.loads(run(["go", "mod", "download", "-json", f"sigs.k8s.io/kueue@{KUEUE_VERSION}"]))["Dir"])


def crd_files() -> list[Path]:
    return sorted((module_dir() / "config" / "components" / "crd" / "bases").glob("*.yaml"))


def visibility_api(port: int) -> list[dict]:
    """Kueue's own APIService for its visibility API (v1beta2), and its Service: an ExternalName to
    localhost:port."""
    manifests = module_dir() / "config" / "components" / "visibility"
    service = yaml.safe_load((manifests / "service.yaml").read_text())
    service["spec"] = {"type": "ExternalName", "externalName": "localhost"}
    apiservice = yaml.safe_load((manifests / "apiservice_v1beta2.yaml").read_text())
    apiservice["spec"]["service"]["port"] = port
    return [service, apiservice]


def _chroot_with(root: Path) -> list[str]:
    """Shell steps (in a private mount namespace) making `root` a tmpfs with the host's top-level folders
    bound into it and its symbolic links copied: a root where Kueue's fixed paths can be made."""
    steps = [f"mount -t tmpfs hyft-kueue-root {root}"]
    for entry in sorted(Path("/").iterdir()):
        inside = shlex.quote(str(root / entry.name))
        if entry.is_symlink():
            steps.append(f"ln -s {shlex.quote(os.readlink(entry))} {inside}")
        elif entry.is_dir():
            steps.append(f"mkdir {inside} && mount --rbind {shlex.quote(str(entry))} {inside}")
    return steps


def webhook_configurations(port: int, ca_bundle: bytes) -> list[dict]:
    """Kueue's own webhook manifests, its kueue.x-k8s.io hooks only, calling 127.0.0.1:port."""
    import base64

    manifests = module_dir() / "config" / "components" / "webhook" / "manifests.yaml"
    out = []
    for doc in yaml.safe_load_all(manifests.read_text()):
        if not doc:
            continue
        hooks = [h for h in doc["webhooks"] if all(r["apiGroups"] == [KUEUE_GROUP] for r in h["rules"])]
        for hook in hooks:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}",
                                    "caBundle": base64.b64encode(ca_bundle).decode()}
        doc["metadata"]["name"] = "kueue-" + doc["metadata"]["name"]
        doc["webhooks"] = hooks
        out.append(doc)
    return out


class Kueue:
    def __init__(self, control_plane: ControlPlane):
        self.cp = control_plane
        self.workdir = control_plane.workdir / "kueue"
        self.process: Process | None = None
        self.registered: list[list[str]] = []  # kubectl's names of what it registered: webhooks, its APIService

    def __enter__(self) -> Kueue:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> Kueue:
        cp, work = self.cp, self.workdir
        work.mkdir(parents=True, exist_ok=True)
        for crd in crd_files():
            cp.kubectl("apply", "--server-side", "-f", str(crd))
        cp.wait_established()
        cp.kubectl("create", "namespace", NAMESPACE, check=False)
        webhook_port, health_port, visibility_port = free_port(), free_port(), free_port()
        certs = work / "certs"
        certs.mkdir(exist_ok=True)
        for src, dst in ((cp.pki.serving_cert, "tls.crt"), (cp.pki.serving_key, "tls.key")):
            (certs / dst).write_bytes(src.read_bytes())
        config = {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration", "namespace": NAMESPACE,
            "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
            "metrics": {"bindAddress": "0"},
            "webhook": {"port": webhook_port, "host": "127.0.0.1", "certDir": str(certs)},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "integrations": {"frameworks": []},
            "visibilityServer": {"bindAddress": "127.0.0.1", "bindPort": visibility_port},
        }
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        root = work / "root"
        root.mkdir(exist_ok=True)
        etc = {name: work / name for name in ("etc-upper", "etc-work")}
        for folder in etc.values():
            folder.mkdir(exist_ok=True)
        script = " && ".join([
            f"mount -t overlay hyft-kueue-etc -o lowerdir=/etc,upperdir={etc['etc-upper']},workdir={etc['etc-work']} "
            "/etc",
            "mkdir -p /etc/kueue/metrics/certs",
            f"cp {certs}/tls.crt {certs}/tls.key /etc/kueue/metrics/certs/",
            *_chroot_with(root),
            f"mkdir {root}/visibility",
            f"cp {certs}/tls.crt {certs}/tls.key {root}/visibility/",
            f"exec chroot {root} {shlex.quote(str(binary('kueue')))} --config {work / 'config.yaml'} "
            f"--kubeconfig {cp.kubeconfig} --zap-log-level=2",
        ])
        self.process = cp._spawn("kueue", ["--mount", "--propagation", "private", "sh", "-c", script],
                                 executable="/usr/bin/unshare", env={"KUBECONFIG": str(cp.kubeconfig),
                                                                     "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        # ready: its caches synced and its webhook server listening
        cp._wait(self.process, f"http://127.0.0.1:{health_port}/readyz", 120)
        hooks = webhook_configurations(webhook_port, cp.pki.ca_cert.read_bytes())
        service, apiservice = visibility_api(visibility_port)
        for doc in (*hooks, service, apiservice):
            cp.kubectl("apply", "-f", "-", input=json.dumps(doc))
            namespace = doc["metadata"].get("namespace")
            self.registered.append([f"{doc['kind'].lower()}/{doc['metadata']['name']}",
                                    *(["-n", namespace] if namespace else [])])
        cp.wait_condition("apis/apiregistration.k8s.io/v1/apiservices", "Available", apiservice["metadata"]["name"])
        return self

    def stop(self) -> None:
        while self.registered:
            self.cp.kubectl("delete", *self.registered.pop(), "--ignore-not-found", check=False)
        if self.process:
            self.process.stop()
            self.cp.processes.remove(self.process)
            self.process = None
