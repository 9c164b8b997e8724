"""GitOps health of a resource exactly as the API server returns it: just applied,
before any operator acted (the CRD's status default gives it phase Pending)."""
from __future__ import annotations

from tests.gitops import argocd_health, flux_statuses, health
from tests.jobs import cpu_job, create, get


def test_a_just_applied_resource_is_pending_and_progressing_for_argo_cd_and_flux(crds, api_client, namespace):
    create(api_client, namespace, {**cpu_job("fresh"), "status": {"phase": "Succeeded"}})  # a status sent is dropped
    obj = get(api_client, namespace, "fresh")
    assert obj["status"]["phase"] == "Pending" and obj["status"]["readyNodes"] == "0/0"
    assert health(obj) == ("Progressing", "Pending")
    assert argocd_health([obj]) == [{"status": "Progressing", "message": "Pending"}]
    assert flux_statuses([obj]) == [{"status": "InProgress"}]
    assert "Pending" in crds.kubectl("get", "hft", "fresh", "-n", namespace).stdout
