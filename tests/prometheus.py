"""A real Prometheus (Debian's package) for the tests that check what the dashboard and alerts read."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import yaml

from hyft_trainer.launcher import free_port


class Prometheus:
    """prometheus on a free port with a 1 s scrape and rule interval; with a
    `namespace` (hyft_envtest.netns.NodeNamespace) it runs inside it, where the pods
    are, and is queried through a forwarded port."""

    def __init__(self, workdir, scrape_configs, rule_files=(), namespace=None):
        binary = shutil.which("prometheus")
        assert binary, "prometheus missing: make sysdeps"
        port = free_port()
        (workdir / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(f) for f in rule_files], "scrape_configs": scrape_configs}))
        self.log = workdir / "prometheus.log"
        prefix = namespace.prefix() if namespace else []
        self.proc = subprocess.Popen(
            [*prefix, binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        self.port = namespace.forward("127.0.0.1", port) if namespace else port
        self._wait_ready()

    def _wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"prometheus not ready after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def _get(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())["data"]

    def query(self, expr, at=None):
        """The result vector (at a Unix time, if given), or [] while Prometheus is not serving yet."""
        try:
            return self._get("query", query=expr, **({"time": at} if at is not None else {}))["result"]
        except OSError:
            return []

    def sample_times(self, expr, start, end):
        """The times (Unix seconds, 1 s apart) at which expr had a value between start and end."""
        result = self._get("query_range", query=expr, start=start, end=end, step=1)["result"]
        return sorted({float(t) for series in result for t, _ in series["values"]})

    def label_values(self, label, match):
        return self._get(f"label/{label}/values", **{"match[]": match})

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def pod_monitor_job(pod_monitor: dict, targets_file) -> dict:
    """A scrape job for a PodMonitor's targets, read from a file that pod_monitor_targets()
    fills (Debian's Prometheus has no Kubernetes service discovery)."""
    endpoint = pod_monitor["spec"]["podMetricsEndpoints"][0]
    meta = pod_monitor["metadata"]
    return {"job_name": f"podMonitor/{meta.get('namespace', 'default')}/{meta['name']}/0",
            "honor_labels": False, "scrape_interval": "1s", "metrics_path": endpoint.get("path", "/metrics"),
            "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}]}


def pod_monitor_targets(pod_monitor: dict, pods: list[dict]) -> list[dict]:
    """The targets prometheus-operator's config selects for a PodMonitor whose selector is a
    list of `Exists` expressions and whose endpoint names a container port: each running
    pod's IP and that port, labelled with namespace, pod and container as it labels them."""
    expressions = pod_monitor["spec"]["selector"]["matchExpressions"]
    assert all(e["operator"] == "Exists" for e in expressions), "only Exists is handled"
    port_name = pod_monitor["spec"]["podMetricsEndpoints"][0]["port"]
    groups = []
    for pod in pods:
        labels, ip = pod["metadata"].get("labels") or {}, pod.get("status", {}).get("podIP")
        if not ip or not all(e["key"] in labels for e in expressions):
            continue
        for container in pod["spec"]["containers"]:
            for port in container.get("ports") or []:
                if port.get("name") == port_name:
                    groups.append({"targets": [f"{ip}:{port['containerPort']}"],
                                   "labels": {"namespace": pod["metadata"]["namespace"],
                                              "pod": pod["metadata"]["name"], "container": container["name"]}})
    return groups
