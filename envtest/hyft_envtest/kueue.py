"""Kueue's controller manager against the test control plane, built from its Go module like the
other binaries (build.py), with its own CRDs and its kueue.x-k8s.io webhooks (defaulting and
validation of Workloads, ClusterQueues, ...) served to the API server over loopback.

    with Kueue(control_plane) as kueue: ...

Kueue serves webhooks with the certificate in webhook.certDir (the control plane's serving
certificate: it names 127.0.0.1), and the webhook configurations call it by URL, with the control
plane's CA. Without its internal certificate management, Kueue reads a metrics certificate from the
fixed path /etc/kueue/metrics/certs: it runs in a mount namespace of its own where /etc is an
overlay holding that folder, so nothing is written to the host's /etc and nothing outlives it.
Only the kueue.x-k8s.io webhooks are registered: hyft hands Kueue Workloads itself, Kueue manages
no Job, pod or other framework here.
"""
from __future__ import annotations

import functools
import json
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
        self.webhooks: list[str] = []  # kind/name of the webhook configurations registered

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
        cp.kubectl("wait", "--for=condition=Established", "crd", "--all")
        cp.kubectl("create", "namespace", NAMESPACE, check=False)
        webhook_port, health_port = free_port(), free_port()
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
            # its aggregated API (pending workloads' positions) would need an APIService routed to it
            "featureGates": {"VisibilityOnDemand": False},
        }
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        etc = {name: work / name for name in ("etc-upper", "etc-work")}
        for folder in etc.values():
            folder.mkdir(exist_ok=True)
        script = " && ".join([
            f"mount -t overlay hyft-kueue-etc -o lowerdir=/etc,upperdir={etc['etc-upper']},workdir={etc['etc-work']} "
            "/etc",
            "mkdir -p /etc/kueue/metrics/certs",
            f"cp {certs}/tls.crt {certs}/tls.key /etc/kueue/metrics/certs/",
            f"exec {shlex.quote(str(binary('kueue')))} --config {work / 'config.yaml'} --zap-log-level=2",
        ])
        self.process = cp._spawn("kueue", ["--mount", "--propagation", "private", "sh", "-c", script],
                                 executable="/usr/bin/unshare", env={"KUBECONFIG": str(cp.kubeconfig),
                                                                     "PATH": "/usr/bin:/bin"})
        # ready: its caches synced and its webhook server listening
        cp._wait(self.process, f"http://127.0.0.1:{health_port}/readyz", 120)
        for doc in webhook_configurations(webhook_port, cp.pki.ca_cert.read_bytes()):
            cp.kubectl("apply", "-f", "-", input=json.dumps(doc))
            self.webhooks.append(f"{doc['kind'].lower()}/{doc['metadata']['name']}")
        return self

    def stop(self) -> None:
        while self.webhooks:
            self.cp.kubectl("delete", self.webhooks.pop(), "--ignore-not-found", check=False)
        if self.process:
            self.process.stop()
            self.cp.processes.remove(self.process)
            self.process = None
