"""The Argo CD health script, run by a real Lua interpreter over sample statuses."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.helpers import ROOT

SCRIPT = ROOT / "charts" / "hyft-operator" / "health" / "argocd-health.lua"


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


@pytest.mark.parametrize("phase, expected", [
    ("Succeeded", "Healthy"), ("Running", "Progressing"), ("Pending", "Progressing"),
    ("Restarting", "Progressing"), ("Failed", "Degraded"), ("Suspended", "Suspended"),
])
def test_phases_map_to_argo_health(phase, expected):
    status, message = health({"metadata": {"generation": 2},
                              "status": {"phase": phase, "observedGeneration": 2, "message": f"it is {phase}"}})
    assert (status, message) == (expected, f"it is {phase}")


def test_no_status_yet_and_a_stale_status_are_progressing():
    assert health({"metadata": {"generation": 1}})[0] == "Progressing"
    stale = {"metadata": {"generation": 3}, "status": {"phase": "Succeeded", "observedGeneration": 2}}
    assert health(stale) == ("Progressing", "The operator has not observed the latest spec yet")
