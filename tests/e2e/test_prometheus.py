"""A real Prometheus (Debian's package) scrapes a running local training, and the
dashboard's training queries return data."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from hyft_trainer.launcher import free_port
from tests.helpers import ROOT

EXAMPLE = ROOT / "examples" / "local-tiny.yaml"
DASHBOARD = ROOT / "charts" / "hyft-operator" / "dashboards" / "hyft-training.json"
# Panels fed by the operator or by NVIDIA's DCGM exporter have no source in a CPU run.
NOT_FROM_THE_TRAINER = ("hyft_operator_", "DCGM_", "hyft_train_eval_loss", "peak_gpu_memory")



def query(port, expr):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())["data"]["result"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from hyft_trainer.tiny import build

    folder = tmp_path_factory.mktemp("models")
    build(folder / "tiny-small", "small")
    return folder


def test_prometheus_scrapes_a_local_run_and_dashboard_queries_return_data(models, tmp_path):
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus missing: make sysdeps"
    workdir = tmp_path / "rendered"
    # the example, long enough to be scraped for a while (stopped by SIGTERM once the data is in)
    resource = yaml.safe_load(EXAMPLE.read_text())
    resource["spec"]["training"].update(maxSteps=100000, loggingSteps=1)
    long_run = tmp_path / "long-run.yaml"
    long_run.write_text(yaml.safe_dump(resource))
    run = subprocess.Popen(
        [sys.executable, "-m", "hyft_operator.cli", "run", str(long_run), "--local", "--volume", f"models={models}",
         "--volume", f"data={ROOT / 'examples' / 'data'}", "--volume", f"work={tmp_path}", "--workdir", str(workdir)],
        stdout=open(tmp_path / "run.log", "w"), stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    prom = None
    try:
        master_config = workdir / "local-tiny-master-0" / "train.yaml"
        deadline = time.monotonic() + 60
        while not master_config.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        metrics_port = yaml.safe_load(master_config.read_text())["metrics_port"]
        web_port = free_port()
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "hyft-trainers",
                                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}]}))
        prom = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{web_port}"],
                                stdout=open(tmp_path / "prometheus.log", "w"), stderr=subprocess.STDOUT)

        queries = [t["expr"].replace("$hyft_job", ".*") for p in json.loads(DASHBOARD.read_text())["panels"]
                   for t in p["targets"]]
        trainer_queries = [q for q in queries if not any(s in q for s in NOT_FROM_THE_TRAINER)]
        assert len(trainer_queries) >= 9
        step_query = 'hyft_train_global_step{hyft_job="local-tiny",node_rank="0"}'
        results = {}
        missing = trainer_queries
        deadline = time.monotonic() + 300
        while missing and run.poll() is None and time.monotonic() < deadline:
            time.sleep(2)
            try:
                results = {q: query(web_port, q) for q in [*trainer_queries, step_query]}
            except OSError:
                continue
            missing = [q for q, r in results.items() if not r]
            if not missing and float(results[step_query][0]["value"][1]) < 1:
                missing = [step_query]  # scraped before the first step: wait for real values
        assert not missing, f"no data for: {missing}\n{(tmp_path / 'run.log').read_text()[-2000:]}"
        assert float(results[step_query][0]["value"][1]) >= 1  # labelled with the job's name
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGTERM)
            try:
                run.wait(120)
            except subprocess.TimeoutExpired:
                run.kill()
        if prom is not None:
            prom.terminate()
            prom.wait(30)
