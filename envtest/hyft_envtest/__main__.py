"""`make cluster`: a development control plane with two fake GPU nodes, or with
`--real-node` (`make real-node`) one real node that runs pods from the hyft images.

    python -m hyft_envtest [--nodes N] [--gpus-per-node G] [--workdir DIR]
    python -m hyft_envtest --real-node [--workdir DIR]     (root, Docker, Debian's CNI plugins)
"""
from __future__ import annotations

import argparse
import json
import signal
import tempfile
import threading
from pathlib import Path

from .build import ensure
from .controlplane import ControlPlane
from .kwok import gpu_node


def serve_until_stopped(kubeconfig: Path, logs: str, startup: float, extra: str = "") -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"up in {startup:.1f}s{extra}")
    print(f"  export KUBECONFIG={kubeconfig}")
    print(f"  logs: {logs}")
    print("Ctrl-C to stop.", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2, help="fake GPU nodes to create (default 2)")
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--real-node", action="store_true",
                        help="one real node (kubelet, containerd, CoreDNS) with both hyft images loaded, "
                             "instead of fake GPU nodes")
    parser.add_argument("--workdir", type=Path, help="where certificates, etcd data and logs go (default: a temp dir)")
    args = parser.parse_args()

    ensure()
    if args.real_node:
        from . import images
        from .realnode import RealNode

        with images.docker_engine():
            built = images.build_all()
            with RealNode(args.workdir or Path(tempfile.mkdtemp(prefix="hyft-real-node-"))) as node:
                for reference in built.values():
                    node.load_image(reference)
                serve_until_stopped(node.kubeconfig, f"{node.workdir}/**/*.log", node.startup_seconds,
                                    f"; images: {', '.join(built.values())}")
        return
    with ControlPlane(workdir=args.workdir, scheduler=True, controller_manager=True, kwok=True) as cp:
        for i in range(args.nodes):
            cp.kubectl("apply", "-f", "-", input=json.dumps(gpu_node(f"gpu-node-{i}", gpus=args.gpus_per_node)))
        serve_until_stopped(cp.kubeconfig, f"{cp.workdir}/*.log", cp.startup_seconds, f" at {cp.server}")


if __name__ == "__main__":
    main()
