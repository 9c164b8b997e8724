"""`hyft operator` processes against a control plane of their own: with Kopf peering
one acts, the other stands by and takes over when the active one is killed; and
a deadline fires on time, not on the next resync."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from kubernetes import client, config

from hyft_envtest.controlplane import ControlPlane
from hyft_envtest.kwok import EXIT_CODE_ANNOTATION, gpu_node
from tests.helpers import ROOT, wait_for
from tests.jobs import cpu_job, create, get


@pytest.fixture
def cluster(tmp_path, control_plane):  # control_plane: binaries are built
    # controller-manager: it lifts the not-ready taint from the fake node once KWOK reports it Ready.
    with ControlPlane(workdir=tmp_path / "cp", scheduler=True, controller_manager=True, kwok=True) as cp:
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cp.wait_established("hunyuanfinetunes.hyft.io", "clusterkopfpeerings.kopf.dev")
        cp.kubectl("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "hyft-operator"}}))
        cp.kubectl("apply", "-f", "-", input=json.dumps(gpu_node("gpu-node-0")))
        yield cp


def start_operator(cp, priority, log, resync_seconds=1):
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig), "HYFT_PEERING_LIFETIME": "4",
           "HYFT_RESYNC_SECONDS": str(resync_seconds), "HYFT_SCRAPE_PROGRESS": "0"}
    return subprocess.Popen([sys.executable, "-m", "hyft_operator.cli", "operator", "--priority", str(priority),
                             "--verbose"], env=env, stdout=log, stderr=subprocess.STDOUT)


def test_standby_operator_takes_over_when_the_active_one_dies(cluster, tmp_path):
    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    logs = {p: open(tmp_path / f"operator-{p}.log", "w") for p in (200, 100)}
    procs = {200: start_operator(cluster, 200, logs[200])}
    try:
        def log(priority):
            return (tmp_path / f"operator-{priority}.log").read_text()

        wait_for(lambda: "Keep-alive in 'hyft-operator' cluster-wide: ok" in log(200), timeout=60,
                 what="the first operator to join the peering")
        procs[100] = start_operator(cluster, 100, logs[100])
        wait_for(lambda: "Keep-alive in 'hyft-operator' cluster-wide: ok" in log(100), timeout=60,
                 what="the second operator to join the peering")
        create(api_client, "default", cpu_job("ha", nodes=1))
        wait_for(lambda: (get(api_client, "default", "ha").get("status") or {}).get("phase") == "Running",
                 timeout=90, what="job Running")
        assert "[default/ha]" not in log(100), "the standby must not act"
        assert "Resuming the watch-stream for hunyuanfinetunes" not in log(100)

        procs[200].send_signal(signal.SIGKILL)
        procs[200].wait(10)
        client.CoreV1Api(api_client).patch_namespaced_pod(
            "ha-master-0", "default", {"metadata": {"annotations": {EXIT_CODE_ANNOTATION: "0"}}})
        wait_for(lambda: get(api_client, "default", "ha")["status"]["phase"] == "Succeeded", timeout=90,
                 what="the standby operator to finish the job")
        assert "Resuming the watch-stream for hunyuanfinetunes" in log(100)
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait(10)
        for log in logs.values():
            log.close()
        api_client.close()


def test_a_deadline_fires_within_two_seconds_of_its_time_not_on_the_next_resync(cluster, tmp_path):
    """activeDeadlineSeconds 6 with a 60 s resync: the plan's requeue time reaches the daemon."""
    import datetime as dt

    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    log = open(tmp_path / "operator.log", "w")
    proc = start_operator(cluster, 100, log, resync_seconds=60)
    try:
        create(api_client, "default", cpu_job("deadline", nodes=1, runPolicy={"activeDeadlineSeconds": 6}))
        wait_for(lambda: (get(api_client, "default", "deadline").get("status") or {}).get("startTime"),
                 timeout=90, what="the job to start")
        wait_for(lambda: get(api_client, "default", "deadline")["status"]["phase"] == "Failed", timeout=60,
                 what="the deadline")
        status = get(api_client, "default", "deadline")["status"]

        def at(field):
            return dt.datetime.fromisoformat(status[field].replace("Z", "+00:00"))

        late = (at("completionTime") - at("startTime")).total_seconds() - 6
        assert 0 <= late <= 2, (late, status)
        assert status["conditions"] and "DeadlineExceeded" in json.dumps(status)
    finally:
        proc.kill()
        proc.wait(10)
        log.close()
        api_client.close()
