"""A real node for end-to-end tests: containerd + runc + CNI + kubelet + CoreDNS
joined to a test control plane, every part of it inside one network and mount
namespace that this module makes (netns.NodeNamespace) and removes again.

    node = RealNode(workdir).start()      # control plane + node + cluster DNS
    node.load_image(images.tag("trainer")) # from the local Docker engine into containerd
    ...                                    # kubectl --kubeconfig node.kubeconfig ...
    node.stop()

Inside the namespace: the node IP sits on a veth pair (no dummy links on this kernel),
the API server listens on 443 of every address, the `kubernetes` Service IP among
them, so pods reach it without a kube-proxy; CoreDNS answers on the node IP and is
the kubelet's clusterDNS; pods get addresses from Debian's bridge + host-local CNI
plugins. containerd keeps its images in the cache (an imported image survives the
run; `load_image` skips one already there) and its state in the test's workdir.

Over 300 lines: the node's parts start in one order and stop in the reverse; one file keeps both
orders in view.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .certs import API_SERVICE_IP
from .controlplane import ControlPlane, Process, StartupError
from .netns import NodeNamespace
from .paths import bin_dir, binary, cache_dir

NODE_NAME = "hyft-node"
NODE_IP = "10.250.0.2"
POD_SUBNET = "10.251.0.0/16"
CLUSTER_DOMAIN = "cluster.local"
SANDBOX_IMAGE = "hyft.local/pause:1"
CRI_NAMESPACE = "k8s.io"
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
CGROUP_ROOT = Path("/sys/fs/cgroup")


def runtime_cgroups() -> set[Path]:
    """The cgroups runc makes for the pods (cgroupfs, no QoS tiers): /sys/fs/cgroup/*/k8s.io."""
    return set(CGROUP_ROOT.glob(f"*/{CRI_NAMESPACE}"))


def containerd_root() -> Path:
    """Images stay between runs: a warm run does not import the trainer image again."""
    return cache_dir() / "realnode" / "containerd"


@dataclass
class RealNode:
    workdir: Path
    processes: list[Process] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket = self.workdir / "containerd.sock"
        self.pod_logs = self.workdir / "pod-logs"
        self.namespace: NodeNamespace | None = None
        self.control_plane: ControlPlane | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    def __enter__(self) -> RealNode:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- lifecycle ---------------------------------------------------------
    def start(self) -> RealNode:
        started = time.monotonic()
        self.cgroups_before = runtime_cgroups()
        try:
            self.namespace = NodeNamespace(NODE_IP, local_ips=(API_SERVICE_IP,))
            self.control_plane = ControlPlane(self.workdir / "control-plane", scheduler=True,
                                              controller_manager=True, namespace=self.namespace, node_ip=NODE_IP)
            self.control_plane.start()
            self._start_containerd()
            self._load_pause_image()
            self._start_kubelet()
            self._start_coredns()
            self._wait_node_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Pods, node, control plane and namespace: nothing is left running or mounted."""
        kubelet = next((p for p in self.processes if p.name == "kubelet"), None)
        if kubelet:
            kubelet.stop()  # first, so that it restarts nothing while the tasks go
        if any(p.name == "containerd" and p.alive() for p in self.processes):
            self._remove_all_containers()
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()
        if self.control_plane:
            self.control_plane.stop()
        if self.namespace:
            self.namespace.stop()  # kills what is left inside (shims) and drops its mounts
        self._remove_runtime_cgroups()

    def _remove_runtime_cgroups(self, timeout: float = 15) -> None:
        """The pod cgroups runc made: whatever still runs in them (a container whose shim was
        killed) is killed, then they are removed, deepest first (a cgroup goes once empty)."""
        made = runtime_cgroups() - getattr(self, "cgroups_before", set())
        deadline = time.monotonic() + timeout
        while made and time.monotonic() < deadline:
            pids = {int(pid) for cgroup in made for procs in cgroup.rglob("cgroup.procs")
                    for pid in procs.read_text().split()}
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            time.sleep(0.2)
        for cgroup in made:
            for folder, _, _ in os.walk(cgroup, topdown=False):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)

    # ---- images ------------------------------------------------------------
    def ctr(self, *args: str, input: bytes | None = None, timeout: float = 120) -> str:
        proc = subprocess.run([str(binary("ctr")), "--address", str(self.socket), "--namespace", CRI_NAMESPACE,
                               *args], input=input, capture_output=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {proc.stderr.decode(errors='replace')}")
        return proc.stdout.decode()

    def load_image(self, tag: str) -> bool:
        """Import a local Docker image into the node's containerd unless the same image is
        there already. Returns whether it imported. The replaced image's content is
        garbage-collected by containerd, so the store keeps one copy."""
        image_id = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True,
                                  text=True, check=True).stdout.strip()
        marker = containerd_root().parent / "imported" / tag.replace("/", "_").replace(":", "_")
        name = tag if "/" in tag.split(":")[0] else f"docker.io/library/{tag}"
        if marker.exists() and marker.read_text() == image_id and name in self.ctr("images", "ls", "-q").split():
            return False
        save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
        try:
            proc = subprocess.run([str(binary("ctr")), "--address", str(self.socket), "--namespace", CRI_NAMESPACE,
                                   "images", "import", "-"], stdin=save.stdout, capture_output=True, timeout=1800)
        finally:
            save.stdout.close()
            save.wait()
        if proc.returncode != 0 or save.returncode != 0:
            raise RuntimeError(f"importing {tag} into containerd failed: {proc.stderr.decode(errors='replace')}")
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(image_id)
        self._drop_replaced_images(name)
        return True

    def _drop_replaced_images(self, name: str) -> None:
        """Keep one copy: the CRI plugin also names each image by its ID (sha256:...), which
        keeps a replaced image alive; remove those whose manifest no named image uses, then
        run the garbage collector now (removing a throwaway tag with --sync waits for it)."""
        refs = [line.split()[:3] for line in self.ctr("images", "ls").splitlines()[1:] if line.strip()]
        named = {digest for ref, _, digest in refs if not ref.startswith("sha256:")}
        for ref, _, digest in refs:
            if ref.startswith("sha256:") and digest not in named:
                self.ctr("images", "rm", ref)
        throwaway = f"{name}-hyft-gc"
        self.ctr("images", "tag", "--force", name, throwaway)
        self.ctr("images", "rm", "--sync", throwaway, timeout=600)

    def _load_pause_image(self) -> None:
        """The sandbox image, built from envtest/pause: no registry to pull one from."""
        if SANDBOX_IMAGE in self.ctr("images", "ls", "-q").split():
            self._drop_replaced_images(SANDBOX_IMAGE)  # whatever an earlier run left behind
            return
        layer = self.workdir / "pause-layer"
        layer.mkdir(exist_ok=True)
        (layer / "pause").write_bytes(binary("pause").read_bytes())
        (layer / "pause").chmod(0o755)
        tar = subprocess.run(["tar", "-C", str(layer), "-c", "pause"], capture_output=True, check=True).stdout
        subprocess.run(["docker", "import", "-c", 'ENTRYPOINT ["/pause"]', "-", SANDBOX_IMAGE], input=tar,
                       capture_output=True, check=True)
        self.load_image(SANDBOX_IMAGE)

    # ---- components --------------------------------------------------------
    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        proc = self.control_plane._spawn(name, args, env=env)
        self.control_plane.processes.remove(proc)  # stopped by this node, in its own order
        self.processes.append(proc)
        return proc

    def _wait(self, proc: Process, ready, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not proc.alive():
                raise StartupError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
            try:
                if ready():
                    return
            except Exception as err:  # noqa: BLE001 (reported if it never gets ready)
                last = str(err)
            time.sleep(0.3)
        raise StartupError(f"{what} not ready after {timeout:.0f}s: {last}\n{proc.tail(60)}")

    def _start_containerd(self) -> None:
        cni_conf = self.workdir / "cni"
        cni_conf.mkdir(exist_ok=True)
        (cni_conf / "10-hyft.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "hyft-pods",
            "plugins": [{"type": "bridge", "bridge": "hyft-pods0", "isGateway": True, "ipMasq": False,
                         "hairpinMode": True,
                         "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]],
                                  "routes": [{"dst": "0.0.0.0/0"}]}}]}))
        root = containerd_root()
        root.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "containerd.toml"
        config.write_text(f"""version = 3
root = "{root}"
state = "{self.workdir / 'containerd-state'}"
[grpc]
  address = "{self.socket}"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{SANDBOX_IMAGE}"
[plugins."io.containerd.cri.v1.runtime"]
  # This machine refuses to lower oom_score_adj, which every pod sandbox asks for.
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{CNI_BIN_DIR}"]
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
      BinaryName = "{binary('runc')}"
      SystemdCgroup = false
""")
        env = {**os.environ, "PATH": f"{bin_dir()}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        proc = self._spawn("containerd", ["--config", str(config)], env=env)
        self._wait(proc, lambda: self.socket.exists() and "Server" in self.ctr("version", timeout=10), "containerd")

    def _start_kubelet(self) -> None:
        resolv = self.workdir / "resolv.conf"
        resolv.write_text("# the real node has no upstream DNS\n")
        config = self.workdir / "kubelet.yaml"
        config.write_text(yaml.safe_dump({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            # a cgroup v1 host with no systemd: plain cgroupfs, no QoS hierarchy to enforce
            "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupsPerQOS": False, "enforceNodeAllocatable": [],
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "clusterDNS": [NODE_IP], "clusterDomain": CLUSTER_DOMAIN, "resolvConf": str(resolv),
            "podLogsDir": str(self.pod_logs),
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},  # reached only from inside the test's namespace
            "readOnlyPort": 0, "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
            # a test machine's disk: never evict or garbage-collect the images under test
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
        }))
        proc = self._spawn("kubelet", [
            "--config", str(config), "--kubeconfig", str(self.control_plane.inner_kubeconfig),
            "--root-dir", str(self.workdir / "kubelet"), "--hostname-override", NODE_NAME, "--node-ip", NODE_IP,
        ])
        self._wait(proc, lambda: self.control_plane._get("http://127.0.0.1:10248/healthz")[0] == 200, "kubelet")

    def _start_coredns(self) -> None:
        corefile = self.workdir / "Corefile"
        corefile.write_text(f""".:53 {{
    bind {NODE_IP}
    errors
    ready 127.0.0.1:8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {self.control_plane.inner_kubeconfig} envtest
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
}}
""")
        proc = self._spawn("coredns", ["-conf", str(corefile)])
        self._wait(proc, lambda: self.control_plane._get("http://127.0.0.1:8181/ready")[0] == 200, "coredns")

    def _wait_node_ready(self, timeout: float = 120) -> None:
        def ready() -> bool:
            node = json.loads(self.control_plane.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
            return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])

        self._wait(next(p for p in self.processes if p.name == "kubelet"), ready, f"node {NODE_NAME}", timeout)

    def _remove_all_containers(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            for task in self.ctr("tasks", "ls", "-q", timeout=30).split():
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self.ctr("tasks", "kill", "--signal", "SIGKILL", task, timeout=30)
                    self.ctr("tasks", "delete", "--force", task, timeout=30)
            for container in self.ctr("containers", "ls", "-q", timeout=30).split():
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self.ctr("containers", "delete", container, timeout=30)

    # ---- diagnostics -------------------------------------------------------
    def log_tails(self, lines: int = 40) -> str:
        procs = [*self.processes, *(self.control_plane.processes if self.control_plane else [])]
        return "\n".join(f"--- {p.name} ({p.log})\n{p.tail(lines)}" for p in procs)
