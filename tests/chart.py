"""The chart, rendered with the helm built from Go modules, and promtool (tests of several tiers use them)."""
from __future__ import annotations

import json
import shutil
import subprocess

import yaml

from hyft_envtest.paths import binary
from tests.helpers import ROOT

CHART = ROOT / "charts" / "hyft-operator"
ALL_FEATURES = ROOT / "charts" / "all-features-values.yaml"
DASHBOARD = CHART / "dashboards" / "hyft-training.json"


def helm(cp, *args, check=True):
    proc = subprocess.run([str(binary("helm")), "--kubeconfig", str(cp.kubeconfig), *args],
                          capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def render(cp, *values, namespace="hyft-system"):
    return [d for d in yaml.safe_load_all(helm(cp, "template", "hyft", str(CHART), "-n", namespace,
                                                *values).stdout) if d]


def promtool(*args, cwd=None):
    tool = shutil.which("promtool")
    assert tool, "promtool missing: make sysdeps (Debian package prometheus)"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def rules_file(cp, tmp_path):
    """The PrometheusRule the chart renders with every feature on, as a Prometheus rule file."""
    rule = next(d for d in render(cp, "-f", str(ALL_FEATURES)) if d["kind"] == "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def dashboard_queries(hyft_job: str = ".*") -> dict[str, list[str]]:
    """Each panel's title -> its PromQL, with Grafana's $hyft_job variable filled in."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {p["title"]: [t["expr"].replace("$hyft_job", hyft_job) for t in p["targets"]] for p in panels}
