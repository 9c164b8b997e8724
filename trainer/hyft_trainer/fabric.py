"""The node's fabric as NCCL will find it: said at start-up, kept in report.json, and a warning where a
multi-node GPU job would fall back to TCP sockets. describe() is pure; read() gathers the facts."""
from __future__ import annotations

import os
import resource
from collections.abc import Mapping

RDMA_DEVICES = "/sys/class/infiniband"  # one entry per RDMA device (InfiniBand, RoCE, EFA)
MEMLOCK_NEED = 64 * 1024 ** 2  # NCCL's IB transport registers (locks) its buffers; the usual ask is unlimited


def describe(env: Mapping[str, str], memlock: int, rdma: list[str], nccl: str | None, nnodes: int,
             on_gpu: bool) -> tuple[dict, list[str]]:
    """(the facts for report.json, the warnings to print). memlock: RLIMIT_MEMLOCK's soft limit (-1: none)."""
    facts = {"nccl_version": nccl, "rdma_devices": rdma,
             "memlock_bytes": None if memlock == resource.RLIM_INFINITY else memlock,
             "nccl_env": {k: v for k, v in sorted(env.items()) if k.startswith(("NCCL_", "TORCH_NCCL_"))}}
    warnings = []
    if on_gpu and nnodes > 1 and not rdma:
        warnings.append(f"no RDMA device ({RDMA_DEVICES} is empty): NCCL between the {nnodes} nodes uses TCP "
                        "sockets, and ZeRO-3's all-gathers will be network-bound; request the fabric with "
                        "spec.network.resources (rdma/ib, vpc.amazonaws.com/efa), spec.network.hostNetwork or a "
                        "Multus network in spec.podMetadata.annotations")
    if on_gpu and rdma and memlock != resource.RLIM_INFINITY and memlock < MEMLOCK_NEED:
        warnings.append(f"the locked-memory limit is {memlock // 1024} KiB: NCCL's RDMA transport needs it "
                        "unlimited (the container runtime's memlock ulimit), or it falls back to sockets")
    return facts, warnings


def read(nnodes: int, on_gpu: bool) -> tuple[dict, list[str]]:
    try:
        rdma = sorted(os.listdir(RDMA_DEVICES))
    except OSError:
        rdma = []
    nccl = None
    if on_gpu:
        import torch

        nccl = ".".join(str(p) for p in torch.cuda.nccl.version())
    return describe(os.environ, resource.getrlimit(resource.RLIMIT_MEMLOCK)[0], rdma, nccl, nnodes, on_gpu)
