"""Build and cache the control-plane binaries from Go modules.

    python -m hyft_envtest.build [--force] [--only NAME ...]

etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kubectl, kwok,
helm, controller-gen, Kueue, the real node's kubelet, containerd (+ its runc shim and
ctr), runc (cgo, with seccomp) and CoreDNS, and our own flux-health,
argocd-health (Flux's and Argo CD's health evaluation) and pause (the pod
sandbox), envtest/<name>, are compiled with the local Go toolchain from the Go
module proxy into ``${HYFT_CACHE:-~/.cache/hyft}/bin``; controller-gen generates
prometheus-operator's CRDs from its Go API types (``prometheus_operator_crds``).
``go install pkg@version`` refuses modules whose go.mod has replace directives
(etcd's server, k8s.io/kubernetes), so each is built from a small helper module
that requires it. A binary that already reports the expected version is not
rebuilt.

Over 300 lines: one build recipe per binary, each a few lines, and the Go module plumbing they share.
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .paths import (
    CONTAINERD_VERSION,
    CONTROLLER_TOOLS_VERSION,
    COREDNS_VERSION,
    ETCD_VERSION,
    HELM_VERSION,
    KUBERNETES_VERSION,
    KUEUE_VERSION,
    KWOK_VERSION,
    PROMETHEUS_OPERATOR_VERSION,
    RUNC_VERSION,
    bin_dir,
    cache_dir,
)

KUBE_COMMANDS = ("kube-apiserver", "kube-scheduler", "kube-controller-manager", "kubectl")


def go_env(cgo: bool = False) -> dict[str, str]:
    root = cache_dir() / "go"
    env = dict(os.environ)
    env.update(
        GOTOOLCHAIN="local",
        CGO_ENABLED="1" if cgo else "0",
        GOMODCACHE=str(root / "mod"),
        GOCACHE=str(root / "build"),
        GOPATH=str(root / "path"),
        GOFLAGS="-mod=mod -buildvcs=false",
    )
    return env


def run(cmd: list[str], cwd: Path | None = None, cgo: bool = False) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=go_env(cgo), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def reported_version(path: Path, args: list[str]) -> str:
    if not path.exists():
        return ""
    try:
        proc = subprocess.run([str(path), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout + proc.stderr


def helper_module(name: str, requires: dict[str, str], replaces: dict[str, str] | None = None) -> Path:
    """A throwaway module whose only job is to require (and replace) what we build."""
    mod_dir = cache_dir() / "src" / name
    mod_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"module hyft.local/build/{name}", "", "go 1.26", ""]
    lines += [f"require {path} {version}" for path, version in requires.items()]
    if replaces:
        lines += ["", "replace ("]
        lines += [f"\t{old} => {new}" for old, new in sorted(replaces.items())]
        lines += [")"]
    gomod = "\n".join(lines) + "\n"
    target = mod_dir / "go.mod"
    if not target.exists() or target.read_text() != gomod:
        target.write_text(gomod)
        (mod_dir / "go.sum").unlink(missing_ok=True)
    # The build needs every transitive requirement in go.sum: let go resolve them.
    for path, version in requires.items():
        run(["go", "get", f"{path}@{version}"], cwd=mod_dir)
    return mod_dir


def go_build(mod_dir: Path, packages: list[str], ldflags: list[str], out: Path, tags: tuple[str, ...] = (),
             cgo: bool = False) -> None:
    # Several packages: -o names a folder; one package: -o names the binary.
    folder = out if len(packages) > 1 else out.parent
    folder.mkdir(parents=True, exist_ok=True)
    target = str(out) + "/" if len(packages) > 1 else str(out)
    run(["go", "build", "-trimpath", "-tags", ",".join(tags), "-ldflags", " ".join(["-s", "-w", *ldflags]),
         "-o", target, *packages], cwd=mod_dir, cgo=cgo)


def module_gomod_path(module: str, version: str) -> Path:
    import json

    info = json.loads(run(["go", "mod", "download", "-json", f"{module}@{version}"]))
    return Path(info["GoMod"])


def staging_replaces(kube_version: str) -> dict[str, str]:
    """k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with
    ./staging/...; map each to its published v0.<minor>.<patch> tag instead."""
    gomod = module_gomod_path("k8s.io/kubernetes", kube_version).read_text()
    staged = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", gomod, flags=re.M)
    if not staged:
        raise RuntimeError("no staging replaces found in k8s.io/kubernetes go.mod")
    staging_version = "v0." + kube_version.lstrip("v").split(".", 1)[1]
    return {module: f"{module} {staging_version}" for module in staged}


def version_ldflags(pkg: str, version: str) -> list[str]:
    major, minor = version.lstrip("v").split(".")[:2]
    build_date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [
        f"-X {pkg}.gitVersion={version}",
        f"-X {pkg}.gitMajor={major}",
        f"-X {pkg}.gitMinor={minor}",
        f"-X {pkg}.gitTreeState=clean",
        f"-X {pkg}.buildDate={build_date}",
    ]


def kubernetes_module() -> tuple[Path, list[str]]:
    """The helper module that builds k8s.io/kubernetes commands, and their version ldflags."""
    mod = helper_module(
        "kubernetes-" + KUBERNETES_VERSION,
        {"k8s.io/kubernetes": KUBERNETES_VERSION},
        staging_replaces(KUBERNETES_VERSION),
    )
    ldflags = version_ldflags("k8s.io/component-base/version", KUBERNETES_VERSION)
    ldflags += version_ldflags("k8s.io/client-go/pkg/version", KUBERNETES_VERSION)
    return mod, ldflags


def build_kubernetes() -> None:
    mod, ldflags = kubernetes_module()
    go_build(mod, [f"k8s.io/kubernetes/cmd/{c}" for c in KUBE_COMMANDS], ldflags, bin_dir())


def build_kubelet() -> None:
    mod, ldflags = kubernetes_module()
    go_build(mod, ["k8s.io/kubernetes/cmd/kubelet"], ldflags, bin_dir() / "kubelet")


CONTAINERD_COMMANDS = ("containerd", "containerd-shim-runc-v2", "ctr")


def build_containerd() -> None:
    module = "github.com/containerd/containerd/v2"
    mod = helper_module("containerd-" + CONTAINERD_VERSION, {module: CONTAINERD_VERSION})
    # No btrfs/devmapper/zfs snapshotters: overlayfs is what the real node uses, and
    # those need C headers.
    go_build(mod, [f"{module}/cmd/{c}" for c in CONTAINERD_COMMANDS],
             [f"-X {module}/version.Version={CONTAINERD_VERSION}"], bin_dir(),
             tags=("no_btrfs", "no_devmapper", "no_zfs"))


def build_runc() -> None:
    # seccomp needs cgo and Debian's libseccomp-dev (.ci/system-deps.sh installs it).
    mod = helper_module("runc-" + RUNC_VERSION, {"github.com/opencontainers/runc": RUNC_VERSION})
    go_build(mod, ["github.com/opencontainers/runc"], [f"-X main.version={RUNC_VERSION.lstrip('v')}"],
             bin_dir() / "runc", tags=("seccomp",), cgo=True)


def build_coredns() -> None:
    mod = helper_module("coredns-" + COREDNS_VERSION, {"github.com/coredns/coredns": COREDNS_VERSION})
    go_build(mod, ["github.com/coredns/coredns"], [], bin_dir() / "coredns")


def build_etcd() -> None:
    try:
        mod = helper_module("etcd-" + ETCD_VERSION, {"go.etcd.io/etcd/server/v3": ETCD_VERSION})
        go_build(mod, ["go.etcd.io/etcd/server/v3"], [], bin_dir() / "etcd")
    except RuntimeError as err:
        print(f"  building etcd from Go modules failed; falling back to Debian's etcd-server\n  {err}")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "etcd-server"], check=True)
        bin_dir().mkdir(parents=True, exist_ok=True)
        shutil.copy2("/usr/bin/etcd", bin_dir() / "etcd")


def build_kwok() -> None:
    mod = helper_module("kwok-" + KWOK_VERSION, {"sigs.k8s.io/kwok": KWOK_VERSION})
    go_build(mod, ["sigs.k8s.io/kwok/cmd/kwok"], [f"-X sigs.k8s.io/kwok/pkg/consts.Version={KWOK_VERSION.lstrip('v')}"],
             bin_dir() / "kwok")


def build_helm() -> None:
    mod = helper_module("helm-" + HELM_VERSION, {"helm.sh/helm/v3": HELM_VERSION})
    # helm reports the Kubernetes version it was built against (lint, capabilities).
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    ldflags = [f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
               "-X helm.sh/helm/v3/internal/version.gitTreeState=clean"]
    for pkg in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        ldflags += [f"-X {pkg}.k8sVersionMajor={major}", f"-X {pkg}.k8sVersionMinor={minor}"]
    go_build(mod, ["helm.sh/helm/v3/cmd/helm"], ldflags, bin_dir() / "helm")


def build_kueue() -> None:
    mod = helper_module("kueue-" + KUEUE_VERSION, {"sigs.k8s.io/kueue": KUEUE_VERSION})
    go_build(mod, ["sigs.k8s.io/kueue/cmd/kueue"], [f"-X sigs.k8s.io/kueue/pkg/version.GitVersion={KUEUE_VERSION}"],
             bin_dir() / "kueue")


def go_build_info(path: Path) -> str:
    """The modules a Go binary was built from (for one that has no --version)."""
    if not path.exists():
        return ""
    return subprocess.run(["go", "version", "-m", str(path)], capture_output=True, text=True).stdout


MONITORING_API = "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring"


def monitoring_module() -> Path:
    return helper_module("monitoring-" + PROMETHEUS_OPERATOR_VERSION, {
        MONITORING_API: PROMETHEUS_OPERATOR_VERSION, "sigs.k8s.io/controller-tools": CONTROLLER_TOOLS_VERSION})


def build_controller_gen() -> None:
    go_build(monitoring_module(), ["sigs.k8s.io/controller-tools/cmd/controller-gen"], [], bin_dir() / "controller-gen")


def prometheus_operator_crds() -> Path:
    """ServiceMonitor, PodMonitor, PrometheusRule, ... CRDs: generated once, then cached."""
    out = cache_dir() / "crds" / f"prometheus-operator-{PROMETHEUS_OPERATOR_VERSION}"
    if not any(out.glob("*.yaml")):
        run([str(bin_dir() / "controller-gen"), "crd:crdVersions=v1,maxDescLen=0", f"paths={MONITORING_API}/v1",
             f"output:crd:dir={out}"], cwd=monitoring_module())
    return out


# Our own small Go tools (envtest/<name>: main.go with a committed go.mod and go.sum).
# pause: the real node's pod sandbox process (no registry here to pull one from).
OWN_TOOLS = ("flux-health", "argocd-health", "pause")


def own_tool_source(name: str) -> Path:
    return Path(__file__).resolve().parent.parent / name


def own_tool_digest(name: str) -> str:
    """Names a build of an own tool: a change to its source or pins rebuilds it."""
    digest = hashlib.sha256()
    for file in ("go.mod", "go.sum", "main.go"):
        digest.update((own_tool_source(name) / file).read_bytes())
    return digest.hexdigest()[:16]


def build_own_tool(name: str) -> None:
    # built as pinned by its go.sum, never re-resolved
    run(["go", "build", "-mod=readonly", "-trimpath", "-ldflags", f"-s -w -X main.version={own_tool_digest(name)}",
         "-o", str(bin_dir() / name), "."], cwd=own_tool_source(name))


@dataclass(frozen=True)
class Target:
    name: str
    binaries: tuple[str, ...]
    version_args: list[str]
    expected: str
    build: Callable[[], None]
    probe: Callable[[Path], str] | None = None  # what the binary says of its version; default: version_args

    def is_current(self) -> bool:
        def reported(path: Path) -> str:
            return self.probe(path) if self.probe else reported_version(path, self.version_args)

        return all(self.expected in reported(bin_dir() / b) for b in self.binaries)


TARGETS = (
    Target("etcd", ("etcd",), ["--version"], f"etcd Version: {ETCD_VERSION.lstrip('v')}", build_etcd),
    Target("kubernetes", KUBE_COMMANDS[:3], ["--version"], f"Kubernetes {KUBERNETES_VERSION}", build_kubernetes),
    Target("kwok", ("kwok",), ["--version"], KWOK_VERSION.lstrip("v"), build_kwok),
    Target("kubelet", ("kubelet",), ["--version"], f"Kubernetes {KUBERNETES_VERSION}", build_kubelet),
    Target("containerd", CONTAINERD_COMMANDS[:1] + CONTAINERD_COMMANDS[2:], ["--version"], CONTAINERD_VERSION,
           build_containerd),
    Target("runc", ("runc",), ["--version"], f"runc version {RUNC_VERSION.lstrip('v')}", build_runc),
    Target("coredns", ("coredns",), ["-version"], f"CoreDNS-{COREDNS_VERSION.lstrip('v')}", build_coredns),
    Target("kueue", ("kueue",), [], f"sigs.k8s.io/kueue\t{KUEUE_VERSION}\t", build_kueue, probe=go_build_info),
    Target("helm", ("helm",), ["version", "--short"], HELM_VERSION, build_helm),
    Target("controller-gen", ("controller-gen",), ["--version"], f"Version: {CONTROLLER_TOOLS_VERSION}",
           build_controller_gen),
    *(Target(name, (name,), ["--version"], f"{name} {own_tool_digest(name)}", functools.partial(build_own_tool, name))
      for name in OWN_TOOLS),
)


def ensure(names: list[str] | None = None, force: bool = False) -> None:
    if shutil.which("go") is None:
        raise SystemExit("Go toolchain not found: install Go >= 1.26 (the control plane is built from Go modules)")
    for target in TARGETS:
        if names and target.name not in names:
            continue
        if not force and target.is_current():
            print(f"{target.name}: cached ({', '.join(target.binaries)} report {target.expected})")
            continue
        started = time.monotonic()
        print(f"{target.name}: building ...", flush=True)
        target.build()
        if not target.is_current():
            raise SystemExit(f"{target.name}: built, but does not report '{target.expected}'")
        print(f"{target.name}: built in {time.monotonic() - started:.0f}s", flush=True)
    print(f"binaries in {bin_dir()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild even when the cached binary is current")
    parser.add_argument("--only", nargs="*", choices=[t.name for t in TARGETS], help="build only these")
    args = parser.parse_args(argv)
    try:
        ensure(args.only, args.force)
    except RuntimeError as err:
        sys.exit(str(err))


if __name__ == "__main__":
    main()
