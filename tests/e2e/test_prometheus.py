"""A real Prometheus (Debian's package) scrapes what the dashboard and the alerts read:
a running local training, the operator reconciling jobs on the real API server, and
dcgm-exporter's format; every dashboard query returns data and the failed-job alert fires."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from kubernetes import client

from hyft_trainer.contract import GPU_METRICS, MOE_METRICS
from hyft_trainer.launcher import free_port
from tests.chart import dashboard_queries, rules_file
from tests.helpers import ROOT, wait_for
from tests.jobs import cpu_job, create, exit_pod, get, wait_phase
from tests.prometheus import Prometheus

EXAMPLE = ROOT / "examples" / "local-tiny.yaml"
OPERATOR_PANELS = ("Jobs by phase", "Gang restarts (1h)")
# A CPU run of a dense model: no GPU memory, no MFU (the DCGM series come from the stand-in below), no router loss.
ABSENT_HERE = (*GPU_METRICS, *MOE_METRICS)


def static_job(name, port, honor_labels=True, labels=None):
    return {"job_name": name, "honor_labels": honor_labels,
            "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": labels or {}}]}


class DcgmExporterStandIn:
    """Serves two series in dcgm-exporter's exposition format (Kubernetes mode) for one pod.
    No GPU here: this checks that the dashboard's DCGM queries find our pods by name."""

    def __init__(self, pod, namespace="default"):
        labels = (f'gpu="0",UUID="GPU-5f3c6a1e-0000-0000-0000-000000000000",device="nvidia0",'
                  f'modelName="NVIDIA H200",Hostname="gpu-node-0",container="trainer",'
                  f'namespace="{namespace}",pod="{pod}"')
        body = (f"# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).\n# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"
                f"DCGM_FI_DEV_GPU_UTIL{{{labels}}} 87\n"
                f"# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).\n# TYPE DCGM_FI_DEV_FB_USED gauge\n"
                f"DCGM_FI_DEV_FB_USED{{{labels}}} 61234\n").encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from hyft_trainer.tiny import build

    folder = tmp_path_factory.mktemp("models")
    build(folder / "tiny-small", "small")
    return folder


def stop_run(run):
    if run.poll() is None:
        run.send_signal(signal.SIGTERM)
        try:
            run.wait(120)
        except subprocess.TimeoutExpired:
            run.kill()


def test_prometheus_scrapes_a_local_run_and_every_training_panel_has_data(models, tmp_path):
    workdir = tmp_path / "rendered"
    # the example with evaluation on, long enough to be scraped for a while (SIGTERM once the data is in)
    resource = yaml.safe_load(EXAMPLE.read_text())
    resource["spec"]["training"].update(maxSteps=100000, loggingSteps=1, evalSteps=2)
    resource["spec"]["data"]["valSize"] = 0.05
    long_run = tmp_path / "long-run.yaml"
    long_run.write_text(yaml.safe_dump(resource))
    run = subprocess.Popen(
        [sys.executable, "-m", "hyft_operator.cli", "run", str(long_run), "--local", "--volume", f"models={models}",
         "--volume", f"data={ROOT / 'examples' / 'data'}", "--volume", f"work={tmp_path}", "--workdir", str(workdir)],
        stdout=open(tmp_path / "run.log", "w"), stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    # dcgm-exporter scraped both ways clusters do it: honouring its pod label, and not (-> exported_pod)
    honoured, renamed = DcgmExporterStandIn("local-tiny-master-0"), DcgmExporterStandIn("local-tiny-worker-0")
    prom = None
    try:
        master_config = workdir / "local-tiny-master-0" / "train.yaml"
        wait_for(master_config.exists, timeout=60, what="the master's rendered config")
        metrics_port = yaml.safe_load(master_config.read_text())["metrics_port"]
        prom = Prometheus(tmp_path, [
            static_job("hyft-trainers", metrics_port),
            static_job("dcgm-honoured", honoured.port),
            static_job("dcgm-renamed", renamed.port, honor_labels=False,
                       labels={"namespace": "gpu-operator", "pod": "nvidia-dcgm-exporter-x7k2p"})])

        # what Grafana sends once the job is picked in the $hyft_job variable
        panels = {title: queries for title, queries in dashboard_queries("local-tiny").items()
                  if title not in OPERATOR_PANELS}
        queries = [q for qs in panels.values() for q in qs if not any(name in q for name in ABSENT_HERE)]
        assert len(queries) >= 13
        step_query = 'hyft_train_global_step{hyft_job="local-tiny",node_rank="0"}'

        def all_answered():
            if run.poll() is not None:
                raise AssertionError("the run ended early")
            results = {q: prom.query(q) for q in [*queries, step_query]}
            missing = [q for q, r in results.items() if not r]
            if missing or float(results[step_query][0]["value"][1]) < 1:
                return None  # (scraped before the first step: wait for real values)
            return results

        try:
            results = wait_for(all_answered, timeout=300, interval=2, what="data for every training panel")
        except AssertionError as err:
            missing = [q for q in queries if not prom.query(q)]
            log = (tmp_path / "run.log").read_text()[-2000:]
            raise AssertionError(f"{err}\nno data for: {missing}\n{log}") from None
        assert "local-tiny" in prom.label_values("hyft_job", "hyft_train_global_step")  # the $hyft_job variable
        for query in [*panels["GPU utilisation (DCGM)"], panels["GPU memory (peak per GPU)"][1]]:
            gpu_pods = {r["metric"]["pod"] for r in results[query]}
            assert gpu_pods == {"local-tiny-master-0", "local-tiny-worker-0"}, (query, gpu_pods)
        eval_loss = next(q for q in queries if "hyft_train_eval_loss" in q)
        assert float(results[eval_loss][0]["value"][1]) > 0
    finally:
        stop_run(run)
        for part in (prom, honoured, renamed):
            if part is not None:
                part.stop()


def test_prometheus_scrapes_the_operator_and_the_failed_job_alert_fires(crds, gpu_nodes, api_client, tmp_path):
    namespace = f"prom-{os.getpid()}"
    client.CoreV1Api(api_client).create_namespace({"metadata": {"name": namespace}})
    metrics_port = free_port()
    env = {**os.environ, "KUBECONFIG": str(crds.kubeconfig), "HYFT_METRICS_PORT": str(metrics_port),
           "HYFT_RESYNC_SECONDS": "1", "HYFT_SCRAPE_PROGRESS": "0"}
    operator = subprocess.Popen([sys.executable, "-m", "hyft_operator.cli", "operator", "--standalone",
                                 "-n", namespace], env=env, stdout=open(tmp_path / "operator.log", "w"),
                                stderr=subprocess.STDOUT)
    prom = Prometheus(tmp_path, [static_job("hyft-operator", metrics_port)], [rules_file(crds, tmp_path)])
    try:
        create(api_client, namespace, cpu_job("flaky"))
        create(api_client, namespace, cpu_job("doomed", nodes=1, runPolicy={"backoffLimit": 0}))
        wait_phase(api_client, namespace, "flaky", "Running")
        wait_phase(api_client, namespace, "doomed", "Running")
        # the counters exist at 0 before anything happens, so increase() sees the first restart
        wait_for(lambda: prom.query(f'hyft_operator_gang_restarts_total{{namespace="{namespace}"}} == 0'),
                 timeout=60, what="restarts scraped at 0")
        exit_pod(api_client, namespace, "flaky-worker-0", 137, "OOMKilled")
        wait_for(lambda: get(api_client, namespace, "flaky")["status"].get("attempt") == 1, what="flaky restarted")
        wait_phase(api_client, namespace, "flaky", "Running")
        exit_pod(api_client, namespace, "flaky-master-0", 0)
        exit_pod(api_client, namespace, "doomed-master-0", 1)
        wait_phase(api_client, namespace, "flaky", "Succeeded")
        wait_phase(api_client, namespace, "doomed", "Failed")

        queries = dashboard_queries()

        def phases():
            return {r["metric"]["phase"]: float(r["value"][1]) for r in prom.query(queries["Jobs by phase"][0])}

        wait_for(lambda: phases().get("Succeeded") == 1 and phases().get("Failed") == 1, timeout=30,
                 what="jobs by phase: 1 Succeeded, 1 Failed")
        restarts = wait_for(lambda: prom.query(queries["Gang restarts (1h)"][0]), timeout=30, what="restarts")
        assert {r["metric"]["namespace"]: float(r["value"][1]) > 0.5 for r in restarts} == {namespace: True}
        alert = wait_for(lambda: prom.query(f'ALERTS{{alertname="HyftJobFailed",alertstate="firing",'
                                            f'namespace="{namespace}"}}'), timeout=30, what="HyftJobFailed firing")
        assert alert[0]["metric"]["severity"] == "warning"
    finally:
        operator.kill()
        operator.wait(10)
        prom.stop()
        client.CoreV1Api(api_client).delete_namespace(namespace)
