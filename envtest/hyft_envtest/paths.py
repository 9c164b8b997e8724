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


def cache_dir() -> Path:
    return Path(os.environ.get("HYFT_CACHE") or Path.home() / ".cache" / "hyft")


def bin_dir() -> Path:
    return cache_dir() / "bin"


def binary(name: str) -> Path:
    return bin_dir() / name
