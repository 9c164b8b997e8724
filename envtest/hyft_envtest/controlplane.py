"""Start and stop a real control plane on loopback.

etcd and kube-apiserver always; kube-scheduler, kube-controller-manager and KWOK
(fake nodes and pod lifecycle stages) on request. Every child process dies with
its parent (PR_SET_PDEATHSIG) and stop() kills whole process groups, so a
crashed test run leaves nothing behind.

With a ``namespace`` (netns.NodeNamespace) every component runs inside it, as on a
real node's control plane: the API server listens on port 443 of every address there
(the API service IP among them, so pods reach it without a kube-proxy), and
``server``/``kubeconfig`` lead to it from this side through a forwarded port, while
``inner_kubeconfig`` is what the components and the node inside use.

Over 300 lines: the components' flags depend on one another (certificates, ports, the namespace);
they are written once, side by side.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
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
from typing import TYPE_CHECKING

from . import certs
from .certs import FRONT_PROXY_CLIENT, SERVICE_CIDR
from .paths import binary

if TYPE_CHECKING:
    from .netns import NodeNamespace

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _condition_true(item: dict, condition: str) -> bool:
    return any(c.get("type") == condition and c.get("status") == "True"
               for c in (item.get("status") or {}).get("conditions") or [])


def _die_with_parent() -> None:
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path | None

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
    namespace: NodeNamespace | None = None
    node_ip: str | None = None  # with a namespace: the node's address, in the serving certificate
    processes: list[Process] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir or tempfile.mkdtemp(prefix="hyft-envtest-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = self.workdir / "kubeconfig"
        self.inner_kubeconfig = self.workdir / "kubeconfig.inner" if self.namespace else self.kubeconfig
        self.api_port = 443 if self.namespace else free_port()
        self.inner_server = f"https://127.0.0.1:{self.api_port}"
        self.server = self.inner_server  # from this side; a forwarded port once started in a namespace

    # ---- lifecycle ---------------------------------------------------------
    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        started = time.monotonic()
        try:
            self.pki = certs.generate(self.workdir / "pki", extra_ips=(self.node_ip,) if self.node_ip else ())
            self._start_etcd()
            if self.namespace:
                self.server = f"https://127.0.0.1:{self.namespace.forward('127.0.0.1', self.api_port)}"
                self._write_kubeconfig(self.inner_kubeconfig, self.inner_server)
            self._write_kubeconfig(self.kubeconfig, self.server)
            self._start_apiserver()
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

    def wait_established(self, *names: str, timeout: float = 60) -> None:
        """Until each named CRD (every CRD when none is named) is Established."""
        self.wait_condition("apis/apiextensions.k8s.io/v1/customresourcedefinitions", "Established", *names,
                            timeout=timeout)

    def wait_condition(self, collection: str, condition: str, *names: str, timeout: float = 60) -> None:
        """Until each named object of a cluster-scoped collection ("apis/GROUP/VERSION/PLURAL"; every object
        when none is named) has `condition` True. Not `kubectl wait`: it fails at once, instead of waiting, on
        an object whose status has no conditions yet (kubernetes/kubernetes#66439; seen here under load with
        a CRD just applied). Lists, then watches from that list's version (listing again if the watch ends)."""
        base = f"{self.server}/{collection}"
        deadline = time.monotonic() + timeout
        while True:
            with urllib.request.urlopen(base, timeout=timeout, context=self.ssl_context()) as resp:
                listed = json.load(resp)
            met = {item["metadata"]["name"]: _condition_true(item, condition) for item in listed["items"]}
            wanted = set(names) or set(met)
            left = deadline - time.monotonic()
            if all(met.get(name) for name in wanted):
                return
            if left <= 0:
                raise RuntimeError(f"{collection}: not {condition} after {timeout:.0f}s: "
                                   f"{sorted(n for n in wanted if not met.get(n))}")
            version = listed["metadata"]["resourceVersion"]
            url = f"{base}?watch=1&resourceVersion={version}&timeoutSeconds={int(left) + 1}"
            with urllib.request.urlopen(url, timeout=left + 5, context=self.ssl_context()) as stream:
                for line in stream:
                    event = json.loads(line)
                    if event["type"] == "ERROR":  # e.g. the version is too old: list again
                        break
                    item = event["object"]
                    met[item["metadata"]["name"]] = event["type"] != "DELETED" and _condition_true(item, condition)
                    if all(met.get(name) for name in wanted):
                        return

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return ctx

    def _spawn(self, name: str, args: list[str], executable: str | None = None,
               env: dict[str, str] | None = None) -> Process:
        path = Path(executable) if executable else binary(name)
        if not path.exists():
            raise StartupError(f"{path} is missing: build it first with `python -m hyft_envtest.build`")
        log = self.workdir / f"{name}.log"
        prefix = self.namespace.prefix() if self.namespace else []
        with open(log, "ab") as out:
            popen = subprocess.Popen([*prefix, str(path), *args], stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir, preexec_fn=_die_with_parent,
                                     env=env)
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
                status, body = self._get(url, context)
                if status == 200 and (expect is None or expect in body):
                    return
                last = body
            except (urllib.error.URLError, OSError) as err:
                last = str(err)
            time.sleep(0.2)
        raise StartupError(f"{proc.name} not ready after {timeout:.0f}s at {url}: {last}\n{proc.tail()}")

    def _get(self, url: str, context: ssl.SSLContext | None = None) -> tuple[int, str]:
        """GET url from where the components run (inside the namespace, if any)."""
        def get() -> tuple[int, str]:
            with urllib.request.urlopen(url, timeout=2, context=context) as resp:
                return resp.status, resp.read().decode()

        return self.namespace.call(get) if self.namespace else get()

    def _component_kubeconfig_flags(self) -> list[str]:
        k = str(self.inner_kubeconfig)
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
        if self.namespace:
            # Every address of the node's namespace: pods reach API_SERVICE_IP:443 there.
            where = ["--bind-address", "0.0.0.0", "--advertise-address", self.node_ip,
                     "--kubelet-preferred-address-types", "InternalIP"]
        else:
            # Loopback may not be published in the kubernetes Endpoints (as envtest does).
            where = ["--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
                     # No kubelet mounts tokens here; the plugin would only reject pods of
                     # namespaces whose default ServiceAccount was not created yet.
                     "--disable-admission-plugins", "ServiceAccount"]
        proc = self._spawn("kube-apiserver", [
            "--etcd-servers", self.etcd_url,
            *where,
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
            # the aggregation layer (an APIService such as Kueue's visibility API): kubeadm's settings
            "--requestheader-client-ca-file", str(pki.front_proxy_ca_cert),
            "--requestheader-allowed-names", FRONT_PROXY_CLIENT,
            "--requestheader-username-headers", "X-Remote-User",
            "--requestheader-group-headers", "X-Remote-Group",
            "--requestheader-extra-headers-prefix", "X-Remote-Extra-",
            "--proxy-client-cert-file", str(pki.front_proxy_cert),
            "--proxy-client-key-file", str(pki.front_proxy_key),
            "--allow-privileged=true",
            "--profiling=false",
            *self.extra_apiserver_flags,
        ])
        self._wait(proc, f"{self.inner_server}/readyz", 120, context=self.ssl_context())

    def _write_kubeconfig(self, path: Path, server: str) -> None:
        pki = self.pki
        path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster:
    server: {server}
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
            "--kubeconfig", str(self.inner_kubeconfig),
            "--config", str(config),
            "--manage-all-nodes=true",
            "--server-address", f"127.0.0.1:{port}",
            "--cidr", "10.244.0.0/16",
            "--node-ip", "10.243.0.1",
        ])
        self._wait(proc, f"http://127.0.0.1:{port}/healthz", 60)
