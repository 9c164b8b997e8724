"""The Helm chart with the helm built from Go modules, against the real API server:
lint, template, install, server-side dry run, and RBAC proven both ways."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from kubernetes import client

from tests.chart import ALL_FEATURES, CHART, dashboard_queries, helm, promtool, render, rules_file
from tests.helpers import ROOT, wait_for
from tests.jobs import cpu_job, create, get


def test_chart_crds_match_the_generated_ones():
    for crd in (ROOT / "crds").glob("*.yaml"):
        assert (CHART / "crds" / crd.name).read_text() == crd.read_text(), f"{crd.name}: run `make regen`"


@pytest.mark.parametrize("values", [[], ["-f", str(ALL_FEATURES)]], ids=["default", "all-features"])
def test_helm_lint_and_template(crds, values):
    assert "0 chart(s) failed" in helm(crds, "lint", str(CHART), *values).stdout
    kinds = {d["kind"] for d in render(crds, *values)}
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"} <= kinds
    if values:
        assert {"Role", "RoleBinding", "KopfPeering", "ServiceMonitor", "PodMonitor", "PrometheusRule"} <= kinds
    else:
        assert "ClusterKopfPeering" in kinds and "ServiceMonitor" not in kinds


@pytest.mark.parametrize("values", [[], ["-f", str(ALL_FEATURES)]], ids=["default", "all-features"])
def test_the_charts_operator_settings_are_the_operators(crds, values):
    """Every HYFT_ variable the chart sets is an OperatorSettings field and validates; where the
    chart's default and the operator's (run outside the chart) speak of the same thing, they agree."""
    from hyft_operator.settings import OperatorSettings

    deployment = next(d for d in render(crds, *values) if d["kind"] == "Deployment")
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    names = {OperatorSettings.env_name(field): field for field in OperatorSettings.model_fields}
    assert set(env) <= set(names), f"the chart sets variables the operator never reads: {set(env) - set(names)}"
    settings = OperatorSettings.from_env(env)
    if not values:
        same = ("trainer_image", "trainer_image_pull_policy", "peering_lifetime", "progress_seconds")
        assert {f: getattr(settings, f) for f in same} == {f: OperatorSettings().__getattribute__(f) for f in same}


def test_bad_values_fail_at_install_time(crds):
    out = helm(crds, "template", "hyft", str(CHART), "--set", "replicaCount=0", check=False)
    assert out.returncode != 0 and "replicaCount" in out.stderr
    out = helm(crds, "template", "hyft", str(CHART), "--set", "metrics.podMonitor.interval=often", check=False)
    assert out.returncode != 0 and "interval" in out.stderr


def test_deployment_is_locked_down(crds):
    deployment = next(d for d in render(crds) if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert deployment["spec"]["replicas"] == 2 and "--peering=hyft-operator" in container["args"]


@pytest.fixture(scope="module")
def installed(crds, api_client):
    helm(crds, "install", "hyft", str(CHART), "-n", "hyft-system", "--create-namespace", "--wait=false")
    return crds


def test_helm_install_creates_every_object(installed, api_client):
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    rbac = client.RbacAuthorizationV1Api(api_client)
    assert apps.read_namespaced_deployment("hyft-hyft-operator", "hyft-system").spec.replicas == 2
    assert core.read_namespaced_service_account("hyft-hyft-operator", "hyft-system")
    assert core.read_namespaced_service("hyft-hyft-operator-metrics", "hyft-system")
    assert rbac.read_cluster_role("hyft-hyft-operator-discovery")
    assert client.CustomObjectsApi(api_client).get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings",
                                                                         "hyft-operator")
    # and the core objects pass the API server's own validation (server-side dry run)
    core_groups = ("v1", "apps", "rbac.authorization.k8s.io")
    core_docs = [d for d in render(installed) if d["apiVersion"].split("/")[0] in core_groups]
    out = installed.kubectl("apply", "--dry-run=server", "-n", "hyft-system", "-f", "-",
                            input="\n---\n".join(yaml.safe_dump(d) for d in core_docs))
    assert "(server dry run)" in out.stdout


def can_i(cp, verb, resource, namespace="default"):
    """A SubjectAccessReview (not kubectl auth can-i, which must find the resource served: Kueue's may not be)."""
    name, _, subresource = resource.partition("/")
    plural, _, group = name.partition(".")
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
        "user": "system:serviceaccount:hyft-system:hyft-hyft-operator",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:hyft-system", "system:authenticated"],
        "resourceAttributes": {"verb": verb, "resource": plural, "group": group, "subresource": subresource,
                               "namespace": namespace}}}
    allowed = cp.kubectl("create", "-f", "-", "-o", "jsonpath={.status.allowed}", input=json.dumps(review)).stdout
    return "yes" if allowed == "true" else "no"


@pytest.mark.parametrize("verb, resource, allowed", [
    ("create", "pods", "yes"), ("delete", "pods", "yes"), ("watch", "pods", "yes"),
    ("patch", "hunyuanfinetunes.hyft.io", "yes"), ("patch", "hunyuanfinetunes.hyft.io/status", "yes"),
    ("create", "events", "yes"), ("create", "configmaps", "yes"),
    ("get", "secrets", "no"), ("list", "secrets", "no"), ("update", "hunyuanfinetunes.hyft.io", "no"),
    ("delete", "services", "no"), ("delete", "configmaps", "no"), ("create", "deployments.apps", "no"),
    ("delete", "hunyuanfinetunes.hyft.io", "no"), ("create", "clusterroles.rbac.authorization.k8s.io", "no"),
    ("create", "workloads.kueue.x-k8s.io", "yes"), ("patch", "workloads.kueue.x-k8s.io/status", "yes"),
    ("update", "workloads.kueue.x-k8s.io", "no"), ("get", "resourceflavors.kueue.x-k8s.io", "yes"),
    ("get", "priorityclasses.scheduling.k8s.io", "yes"), ("create", "clusterqueues.kueue.x-k8s.io", "no"),
    ("get", "localqueues.visibility.kueue.x-k8s.io/pendingworkloads", "yes"),
    ("get", "workloadpriorityclasses.kueue.x-k8s.io", "yes"),
    ("get", "clusterqueues.visibility.kueue.x-k8s.io/pendingworkloads", "no"),
])
def test_operator_identity_has_exactly_what_it_uses(installed, verb, resource, allowed):
    assert can_i(installed, verb, resource) == allowed


def test_operator_reconciles_under_the_charts_service_account(installed, api_client, tmp_path, gpu_nodes):
    token = installed.kubectl("create", "token", "hyft-hyft-operator", "-n", "hyft-system").stdout.strip()
    config = yaml.safe_load(installed.kubeconfig.read_text())
    config["users"] = [{"name": "operator", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "operator"
    kubeconfig = tmp_path / "operator-kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    namespace = "rbac-" + os.urandom(3).hex()
    client.CoreV1Api(api_client).create_namespace({"metadata": {"name": namespace}})
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HYFT_RESYNC_SECONDS": "1", "HYFT_SCRAPE_PROGRESS": "0"}
    log = open(tmp_path / "operator.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "hyft_operator.cli", "operator", "--standalone",
                             "--namespace", namespace], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        create(api_client, namespace, cpu_job("rbac", nodes=2))
        wait_for(lambda: (get(api_client, namespace, "rbac").get("status") or {}).get("phase") == "Running",
                 timeout=90, what="job Running under the chart's identity")
    finally:
        proc.kill()
        proc.wait(10)
        log.close()
    text = (tmp_path / "operator.log").read_text()
    assert "403" not in text and "Forbidden" not in text, text[-3000:]


# ------------------------------------------------------------- Prometheus
MONITORING_KINDS = {"ServiceMonitor": "servicemonitors", "PodMonitor": "podmonitors",
                    "PrometheusRule": "prometheusrules"}


def test_monitoring_objects_pass_the_prometheus_operator_schemas(crds, namespace):
    """What kube-prometheus-stack's API server would say: the monitors and rules against
    prometheus-operator's own CRDs (generated from its Go API types)."""
    from hyft_envtest.build import prometheus_operator_crds

    for plural in MONITORING_KINDS.values():
        crd = prometheus_operator_crds() / f"monitoring.coreos.com_{plural}.yaml"
        crds.kubectl("apply", "--server-side", "-f", str(crd))
        crds.wait_established(f"{plural}.monitoring.coreos.com")
    objects = [d for d in render(crds, "-f", str(ALL_FEATURES), namespace=namespace) if d["kind"] in MONITORING_KINDS]
    assert sorted(d["kind"] for d in objects) == sorted(MONITORING_KINDS)
    for obj in objects:
        crds.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=json.dumps(obj))
    # the check has teeth: a misspelt field is refused
    pod_monitor = next(d for d in objects if d["kind"] == "PodMonitor")
    pod_monitor["spec"]["podMetricEndpoints"] = pod_monitor["spec"].pop("podMetricsEndpoints")
    out = crds.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=json.dumps(pod_monitor),
                       check=False)
    assert out.returncode != 0 and "podMetricEndpoints" in out.stderr, out.stderr

def test_alert_rules_pass_promtool_check(crds, tmp_path):
    out = promtool("check", "rules", str(rules_file(crds, tmp_path)))
    assert out.returncode == 0 and "SUCCESS: 6 rules found" in out.stdout, out.stdout + out.stderr


def test_every_dashboard_query_parses(tmp_path):
    queries = [q for panel in dashboard_queries().values() for q in panel]
    rules = [{"record": f"hyft:dashboard_query:{i}", "expr": q} for i, q in enumerate(queries)]
    path = tmp_path / "dashboard.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = promtool("check", "rules", str(path))
    assert out.returncode == 0 and f"SUCCESS: {len(queries)} rules found" in out.stdout, out.stdout + out.stderr


def test_alert_rules_fire_when_they_should(crds, tmp_path):
    rules_file(crds, tmp_path)
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": 'hyft_train_last_step_timestamp_seconds{hyft_job="stuck",node_rank="0"}',
                 "values": "0x30"},
                {"series": 'hyft_train_loss{hyft_job="nan",node_rank="0"}', "values": "5 4 NaN NaN"},
                # loading for ever (no step series), and one that started stepping after 5 minutes
                {"series": 'hyft_train_process_start_timestamp_seconds{hyft_job="loading",node_rank="0"}',
                 "values": "0x40"},
                {"series": 'hyft_train_process_start_timestamp_seconds{hyft_job="started",node_rank="0"}',
                 "values": "0x40"},
                {"series": 'hyft_train_last_step_timestamp_seconds{hyft_job="started",node_rank="0"}',
                 "values": "_x4 300+60x35"},
                {"series": 'hyft_operator_jobs_finished_total{namespace="team-a",phase="Failed"}',
                 "values": "0 0 1 1 1"},
                {"series": 'hyft_operator_jobs_finished_total{namespace="team-a",phase="Succeeded"}',
                 "values": "0 1 2 3 4"},
                # two operator replicas (after a failover): restarts add up per namespace
                {"series": 'hyft_operator_gang_restarts_total{namespace="team-a",pod="op-a"}',
                 "values": "0 2 2 2 2 2 2 2 2 2"},
                {"series": 'hyft_operator_gang_restarts_total{namespace="team-a",pod="op-b"}',
                 "values": "_ _ _ _ _ 0 0 0 0 1"},
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "HyftJobStalled", "exp_alerts": []},
                {"eval_time": "20m", "alertname": "HyftJobStalled", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "hyft_job": "stuck"},
                    "exp_annotations": {"summary": "stuck made no training step for 10 minutes"}}]},
                {"eval_time": "10m", "alertname": "HyftJobNotStarting", "exp_alerts": []},
                {"eval_time": "25m", "alertname": "HyftJobNotStarting", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "hyft_job": "loading"},
                    "exp_annotations": {"summary": "loading made no first training step 20 minutes after its trainer "
                                                   "started (loading the model or data, or waiting for the other "
                                                   "nodes)"}}]},
                {"eval_time": "1m", "alertname": "HyftLossNotFinite", "exp_alerts": []},
                {"eval_time": "3m", "alertname": "HyftLossNotFinite", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "hyft_job": "nan", "node_rank": "0"},
                    "exp_annotations": {"summary": "nan has a NaN or infinite training loss"}}]},
                {"eval_time": "1m", "alertname": "HyftJobFailed", "exp_alerts": []},
                {"eval_time": "4m", "alertname": "HyftJobFailed", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "namespace": "team-a"},
                    "exp_annotations": {"summary": "A HunyuanFineTune failed in team-a: kubectl get hft -n team-a "
                                                   "shows which and why"}}]},
                {"eval_time": "8m", "alertname": "HyftGangRestarts", "exp_alerts": []},
                {"eval_time": "9m", "alertname": "HyftGangRestarts", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "namespace": "team-a"},
                    "exp_annotations": {"summary": "HunyuanFineTune gangs restarted more than twice in an hour in "
                                                   "team-a"}}]},
            ],
        }],
    }))
    out = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_ships_for_the_grafana_sidecar_and_covers_training(crds):
    cm = next(d for d in render(crds) if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["hyft-training.json"])
    titles = {p["title"] for p in dashboard["panels"]}
    for needed in ("Jobs by phase", "Gang restarts (1h)", "Progress", "ETA", "Loss", "Learning rate",
                   "Gradient norm", "Tokens per second", "Step time", "Host memory (peak RSS per node)",
                   "GPU memory (peak per GPU)", "GPU utilisation (DCGM)", "MFU"):
        assert needed in titles
    assert any("DCGM_FI_DEV_GPU_UTIL" in q for q in dashboard_queries()["GPU utilisation (DCGM)"])
