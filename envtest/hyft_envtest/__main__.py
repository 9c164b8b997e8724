"""`make cluster`: a development control plane with two fake GPU nodes.

    python -m hyft_envtest [--nodes N] [--gpus-per-node G] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path

from .build import ensure
from .controlplane import ControlPlane
from .kwok import gpu_node


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2, help="fake GPU nodes to create (default 2)")
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--workdir", type=Path, help="where certificates, etcd data and logs go (default: a temp dir)")
    args = parser.parse_args()

    ensure()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with ControlPlane(workdir=args.workdir, scheduler=True, controller_manager=True, kwok=True) as cp:
        for i in range(args.nodes):
            cp.kubectl("apply", "-f", "-", input=json.dumps(gpu_node(f"gpu-node-{i}", gpus=args.gpus_per_node)))
        print(f"control plane up in {cp.startup_seconds:.1f}s at {cp.server}")
        print(f"  export KUBECONFIG={cp.kubeconfig}")
        print(f"  logs: {cp.workdir}/*.log")
        print("Ctrl-C to stop.", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
