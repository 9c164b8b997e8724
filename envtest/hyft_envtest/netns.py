"""A network and mount namespace for a test's real node, and the ways in from here.

The namespace is held by one `sleep` process started under `unshare`: every
component runs in it through `nsenter`, so its addresses (the node IP on a veth
pair, the API service IP) and its mounts (tmpfs over /run, /var/log, /var/lib;
containerd's and the kubelet's own) exist only there and vanish with it. Host-side
clients reach a service inside through `forward()`; `call()` runs a function in a
thread that has joined the network namespace (a socket belongs to the namespace of
the thread that made it).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from .controlplane import Process, _die_with_parent

CLONE_NEWNET = 0x40000000
# Hidden by tmpfs inside the namespace: paths the runtime and kubelet write to that
# cannot be configured away (pod netns bind mounts, CNI state, /var/log/containers).
PRIVATE_DIRS = ("/run", "/var/log", "/var/lib")
T = TypeVar("T")


def join_network_namespace(path: str) -> None:
    """This thread's sockets from now on belong to the network namespace at `path`."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if ctypes.CDLL("libc.so.6", use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class NodeNamespace:
    def __init__(self, node_ip: str, local_ips: tuple[str, ...] = ()):
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "--", "sleep", "infinity"],
            stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self.pid = self.holder.pid
        self.net_path = f"/proc/{self.pid}/ns/net"
        self.forwarders: list[Forwarder] = []
        try:
            self._wait_until_entered()
            self._set_up(node_ip, local_ips)
        except BaseException:
            self.stop()
            raise

    def prefix(self) -> list[str]:
        return ["nsenter", f"--target={self.pid}", "--net", "--mount", "--"]

    def run(self, script: str) -> str:
        proc = subprocess.run([*self.prefix(), "sh", "-euc", script], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"in the node namespace: {script}\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def _wait_until_entered(self) -> None:
        mine = os.stat("/proc/self/ns/net").st_ino
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if os.stat(self.net_path).st_ino != mine:
                    return
            if self.holder.poll() is not None:
                raise RuntimeError("unshare --net --mount failed (needs root)")
            time.sleep(0.05)
        raise RuntimeError("the node namespace did not appear")

    def _set_up(self, node_ip: str, local_ips: tuple[str, ...]) -> None:
        # This kernel has no dummy links: the node IP sits on one end of a veth pair whose
        # both ends stay inside the namespace.
        script = ["ip link set lo up", "ip link add hyft-node type veth peer name hyft-peer",
                  f"ip addr add {node_ip}/24 dev hyft-node", "ip link set hyft-node up", "ip link set hyft-peer up",
                  *(f"ip addr add {ip}/32 dev lo" for ip in local_ips),
                  *(f"mount -t tmpfs -o mode=755 hyft-node {d}" for d in PRIVATE_DIRS),
                  "mkdir -p /run/netns /var/lib/cni /var/log/containers"]
        self.run("\n".join(script))

    def call(self, fn: Callable[..., T], *args) -> T:
        """fn(*args) in a thread inside the network namespace."""
        outcome: dict = {}

        def inside() -> None:
            try:
                join_network_namespace(self.net_path)
                outcome["value"] = fn(*args)
            except BaseException as err:  # handed to the caller
                outcome["error"] = err

        thread = threading.Thread(target=inside, daemon=True)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def forward(self, host: str, port: int) -> int:
        """A loopback port on this side that leads to host:port inside."""
        forwarder = Forwarder(self.net_path, host, port)
        self.forwarders.append(forwarder)
        return forwarder.port

    def processes(self) -> list[int]:
        """Every process still in this namespace, the holder included."""
        inode = os.stat(self.net_path).st_ino if self.holder.poll() is None else None
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and inode is not None:
                with contextlib.suppress(OSError):
                    if os.stat(f"/proc/{entry}/ns/net").st_ino == inode:
                        found.append(int(entry))
        return found

    def stop(self, timeout: float = 15) -> None:
        for forwarder in self.forwarders:
            forwarder.close()
        deadline = time.monotonic() + timeout
        while (left := [pid for pid in self.processes() if pid != self.pid]) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            time.sleep(0.1)  # gone once their parent (or init) has reaped them
        Process("namespace", self.holder, log=None).stop(grace=5)


class Forwarder:
    """Accepts on 127.0.0.1:<port> here and connects to host:port in the namespace."""

    def __init__(self, net_path: str, host: str, port: int):
        self.net_path, self.target = net_path, (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            join_network_namespace(self.net_path)
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
