"""GitOps health of HunyuanFineTune objects as Argo CD and Flux compute it: the shipped
Argo CD Lua script under Debian's Lua 5.4 and under gopher-lua set up as Argo CD runs
it (argocd-health), and the shipped Flux healthCheckExprs under Flux's own status
reader (flux-health); both tools are built from envtest/<name>."""
from __future__ import annotations

import json
import shutil
import subprocess

import yaml

from hyft_envtest.paths import binary
from tests.helpers import ROOT

HEALTH = ROOT / "charts" / "hyft-operator" / "health"
SCRIPT = HEALTH / "argocd-health.lua"
FLUX_KUSTOMIZATION = HEALTH / "flux-kustomization.yaml"


def lua_value(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_value(k)}] = {lua_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def health(obj: dict) -> tuple[str, str]:
    lua = shutil.which("lua5.4")
    assert lua, "lua5.4 missing: make sysdeps"
    program = (f"obj = {lua_value(obj)}\nlocal hs = dofile({lua_value(str(SCRIPT))})\n"
               'io.write(hs.status, "\\n", hs.message)')
    out = subprocess.run([lua, "-e", program], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    status, message = out.stdout.split("\n", 1)
    return status, message


def flux_statuses(objects: list[dict]) -> list[dict]:
    """What kustomize-controller's status reader makes of each object, with the shipped expressions."""
    tool = binary("flux-health")
    assert tool.exists(), "flux-health missing: make binaries (or python -m hyft_envtest.build --only flux-health)"
    exprs = yaml.safe_load(FLUX_KUSTOMIZATION.read_text())["spec"]["healthCheckExprs"]
    out = subprocess.run([str(tool)], input=json.dumps({"healthCheckExprs": exprs, "objects": objects}),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def argocd_health(objects: list[dict]) -> list[dict]:
    """Argo CD's interpreter (gopher-lua, Lua 5.1) with the libraries Argo CD opens."""
    tool = binary("argocd-health")
    assert tool.exists(), "argocd-health missing: make binaries (or python -m hyft_envtest.build --only argocd-health)"
    out = subprocess.run([str(tool), str(SCRIPT)], input=json.dumps(objects), capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)
