"""Start and stop a real control plane on loopback.

etcd and kube-apiserver always; kube-scheduler, kube-controller-manager and KWOK
(fake nodes and pod lifecycle stages) on request. Every child process dies with
its parent (PR_SET_PDEATHSIG) and stop() kills whole process groups, so a
crashed test run leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import certs
from .paths import binary

SERVICE_CIDR = "10.0.0.0/24"
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class StartupError(RuntimeError):
    pass


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver (+ optional components).

    Use as a context manager, or call start()/stop(). ``kubeconfig`` is an admin
    (system:masters) kubeconfig for the API server at ``server``.
    """

    workdir: Path | None = None
    scheduler: bool = False
    controller_manager: bool = False
    kwok: bool = False
    extra_apiserver_flags: list[str] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir or tempfile.mkdtemp(prefix="hyft-envtest-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = self.workdir / "kubeconfig"
        self.api_port = free_port()
        self.server = f"https://127.0.0.1:{self.api_port}"

    # ---- lifecycle ---------------------------------------------------------
    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        started = time.monotonic()
        try:
            self.pki = certs.generate(self.workdir / "pki")
            self._start_etcd()
            self._start_apiserver()
            self._write_kubeconfig()
            if self.controller_manager:
                self._start_controller_manager()
            if self.scheduler:
                self._start_scheduler()
            if self.kwok:
                self._start_kwok()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()

    # ---- helpers -----------------------------------------------------------
    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(binary("kubectl")), "--kubeconfig", str(self.kubeconfig), *args],
                              capture_output=True, text=True, input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return ctx

    def _spawn(self, name: str, args: list[str]) -> Process:
        path = binary(name)
        if not path.exists():
            raise StartupError(f"{path} is missing: build it first with `python -m hyft_envtest.build`")
        log = self.workdir / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen([str(path), *args], stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir, preexec_fn=_die_with_parent)
        proc = Process(name, popen, log)
        self.processes.append(proc)
        return proc

    def _wait(self, proc: Process, url: str, timeout: float, context: ssl.SSLContext | None = None,
              expect: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not proc.alive():
                raise StartupError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as resp:
                    body = resp.read().decode()
                    if resp.status == 200 and (expect is None or expect in body):
                        return
                    last = body
            except (urllib.error.URLError, OSError) as err:
                last = str(err)
            time.sleep(0.2)
        raise StartupError(f"{proc.name} not ready after {timeout:.0f}s at {url}: {last}\n{proc.tail()}")

    def _component_kubeconfig_flags(self) -> list[str]:
        k = str(self.kubeconfig)
        return ["--kubeconfig", k, "--authentication-kubeconfig", k, "--authorization-kubeconfig", k]

    # ---- components --------------------------------------------------------
    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        proc = self._spawn("etcd", [
            "--name", "envtest",
            "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", self.etcd_url,
            "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"envtest=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync",  # test data: durability buys nothing, fsync costs seconds
            "--log-level", "warn",
        ])
        self._wait(proc, f"{self.etcd_url}/health", 60, expect='"health":"true"')

    def _start_apiserver(self) -> None:
        pki = self.pki
        proc = self._spawn("kube-apiserver", [
            "--etcd-servers", self.etcd_url,
            "--bind-address", "127.0.0.1",
            "--advertise-address", "127.0.0.1",
            # Loopback may not be published in the kubernetes Endpoints (as envtest does).
            "--endpoint-reconciler-type", "none",
            "--secure-port", str(self.api_port),
            "--cert-dir", str(self.workdir / "apiserver-certs"),
            "--tls-cert-file", str(pki.serving_cert),
            "--tls-private-key-file", str(pki.serving_key),
            "--client-ca-file", str(pki.ca_cert),
            "--service-account-key-file", str(pki.sa_pub),
            "--service-account-signing-key-file", str(pki.sa_key),
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--authorization-mode", "RBAC",
            "--allow-privileged=true",
            # No kubelet mounts tokens here; the plugin would only reject pods of
            # namespaces whose default ServiceAccount was not created yet.
            "--disable-admission-plugins", "ServiceAccount",
            "--profiling=false",
            *self.extra_apiserver_flags,
        ])
        self._wait(proc, f"{self.server}/readyz", 120, context=self.ssl_context())

    def _write_kubeconfig(self) -> None:
        pki = self.pki
        self.kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster:
    server: {self.server}
    certificate-authority: {pki.ca_cert}
users:
- name: envtest-admin
  user:
    client-certificate: {pki.admin_cert}
    client-key: {pki.admin_key}
contexts:
- name: envtest
  context:
    cluster: envtest
    user: envtest-admin
    namespace: default
current-context: envtest
""")

    def _unverified(self) -> ssl.SSLContext:
        # Components serve /healthz with a self-signed certificate of their own.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _start_scheduler(self) -> None:
        port = free_port()
        proc = self._spawn("kube-scheduler", [
            *self._component_kubeconfig_flags(),
            "--bind-address", "127.0.0.1", "--secure-port", str(port),
            "--cert-dir", str(self.workdir / "scheduler-certs"),
            "--leader-elect=false",
        ])
        self._wait(proc, f"https://127.0.0.1:{port}/healthz", 60, context=self._unverified())

    def _start_controller_manager(self) -> None:
        port = free_port()
        proc = self._spawn("kube-controller-manager", [
            *self._component_kubeconfig_flags(),
            "--bind-address", "127.0.0.1", "--secure-port", str(port),
            "--cert-dir", str(self.workdir / "controller-manager-certs"),
            "--leader-elect=false",
            "--service-account-private-key-file", str(self.pki.sa_key),
            "--root-ca-file", str(self.pki.ca_cert),
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--use-service-account-credentials=false",
            # Fast garbage collection and namespace deletion for tests.
            "--concurrent-gc-syncs", "5",
        ])
        self._wait(proc, f"https://127.0.0.1:{port}/healthz", 60, context=self._unverified())

    def _start_kwok(self) -> None:
        from .kwok import write_config

        port = free_port()
        config = write_config(self.workdir / "kwok.yaml")
        proc = self._spawn("kwok", [
            "--kubeconfig", str(self.kubeconfig),
            "--config", str(config),
            "--manage-all-nodes=true",
            "--server-address", f"127.0.0.1:{port}",
            "--cidr", "10.244.0.0/16",
            "--node-ip", "10.243.0.1",
        ])
        self._wait(proc, f"http://127.0.0.1:{port}/healthz", 60)
