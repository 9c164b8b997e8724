"""GitOps health over sample statuses: the Argo CD script run by a real Lua
interpreter, and the Flux healthCheckExprs run by Flux's own evaluator."""
from __future__ import annotations

import pytest

from tests.gitops import flux_statuses, health

PHASES = ("Succeeded", "Running", "Pending", "Restarting", "Failed", "Suspended")


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
    # Without any status CEL cannot name `status` at all: Flux reports Unknown and keeps polling.
    # (The API server never returns that: the CRD defaults status; tests/k8s/test_gitops_health.py.)
    assert statuses[2]["status"] == "Unknown" and "status" in statuses[2]["error"]
