"""Where the built binaries and their build caches live."""
from __future__ import annotations

import os
from pathlib import Path

# Pinned versions: one place to bump them.
KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.22.0"
# prometheus-operator's CRDs, generated from its API types by controller-gen as upstream does
PROMETHEUS_OPERATOR_VERSION = "v0.95.2"
CONTROLLER_TOOLS_VERSION = "v0.23.0"
# The real node (kubelet comes from KUBERNETES_VERSION): Kubernetes 1.36+ needs containerd 2.x,
# and containerd 2.x needs a runc newer than Debian's.
CONTAINERD_VERSION = "v2.4.2"
RUNC_VERSION = "v1.5.3"
COREDNS_VERSION = "v1.15.0"
# Kueue (the k8s tier runs its controller: quotas, admission, preemption of hyft's Workloads)
KUEUE_VERSION = "v0.17.0"


def cache_dir() -> Path:
    return Path(os.environ.get("HYFT_CACHE") or Path.home() / ".cache" / "hyft")


def bin_dir() -> Path:
    return cache_dir() / "bin"


def binary(name: str) -> Path:
    return bin_dir() / name
