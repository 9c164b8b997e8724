"""GitOps health over sample statuses: the Argo CD script run by Debian's Lua 5.4 and
by gopher-lua as Argo CD sets it up, and the Flux healthCheckExprs run by Flux's own
evaluator."""
from __future__ import annotations

import pytest

from tests.gitops import argocd_health, flux_statuses, health

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
    assert argocd_health([job(phase)]) == [{"status": expected, "message": f"it is {phase}"}]


def test_no_status_yet_a_fresh_one_and_a_stale_one_are_progressing():
    fresh = job()
    fresh["status"] = {"phase": "Pending", "message": ""}  # what the CRD's status default gives
    stale = job("Succeeded", generation=3, observed=2)
    expected = [("Progressing", "Waiting for the operator"), ("Progressing", "Pending"),
                ("Progressing", "The operator has not observed the latest spec yet")]
    assert [health(o) for o in (job(), fresh, stale)] == expected
    assert [(h["status"], h["message"]) for h in argocd_health([job(), fresh, stale])] == expected


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
