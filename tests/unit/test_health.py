"""GitOps health over sample statuses: the Argo CD script run by a real Lua
interpreter, and the Flux healthCheckExprs run by Flux's own evaluator."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from hyft_envtest.paths import binary
from tests.helpers import ROOT

HEALTH = ROOT / "charts" / "hyft-operator" / "health"
SCRIPT = HEALTH / "argocd-health.lua"
FLUX_KUSTOMIZATION = HEALTH / "flux-kustomization.yaml"
PHASES = ("Succeeded", "Running", "Pending", "Restarting", "Failed", "Suspended")


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


def job(phase=None, generation=2, observed=2):
    obj = {"apiVersion": "hyft.io/v1alpha1", "kind": "HunyuanFineTune",
           "metadata": {"name": "j", "namespace": "ml", "generation": generation}}
    if phase:
        obj["status"] = {"phase": phase, "observedGeneration": observed, "message": f"it is {phase}"}
    return obj


@pytest.mark.parametrize("phase, expected", list(zip(PHASES, ["Healthy", "Progressing", "Progressing", "Progressing",
                                                         "Degraded", "Suspended"], strict=True)))
def test_phases_map_to_argo_health(phase, expected):
    assert health(job(phase)) == (expected, f"it is {phase}")


def test_no_status_yet_and_a_stale_status_are_progressing():
    assert health({"metadata": {"generation": 1}})[0] == "Progressing"
    stale = {"metadata": {"generation": 3}, "status": {"phase": "Succeeded", "observedGeneration": 2}}
    assert health(stale) == ("Progressing", "The operator has not observed the latest spec yet")


def flux_statuses(objects: list[dict]) -> list[dict]:
    """What kustomize-controller's status reader makes of each object, with the shipped expressions."""
    tool = binary("flux-health")
    assert tool.exists(), "flux-health missing: make binaries (or python -m hyft_envtest.build --only flux-health)"
    exprs = yaml.safe_load(FLUX_KUSTOMIZATION.read_text())["spec"]["healthCheckExprs"]
    out = subprocess.run([str(tool)], input=json.dumps({"healthCheckExprs": exprs, "objects": objects}),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_flux_health_check_exprs_map_every_phase():
    statuses = flux_statuses([job(phase) for phase in PHASES])
    assert [s["status"] for s in statuses] == ["Current", "InProgress", "InProgress", "InProgress", "Failed",
                                               "Current"]
    assert not any(s.get("error") for s in statuses)


def test_flux_waits_on_a_stale_or_unfilled_status():
    stale, unfilled, none_yet = job("Succeeded", generation=3, observed=2), job(), job()
    unfilled["status"] = {}
    statuses = flux_statuses([stale, unfilled, none_yet])
    assert [s["status"] for s in statuses[:2]] == ["InProgress", "InProgress"]
    # Before the operator's first status write (a second after apply) CEL cannot name `status` at
    # all: Flux reports Unknown with the error and keeps polling, which is waiting too.
    assert statuses[2]["status"] == "Unknown" and "status" in statuses[2]["error"]
