"""The operator at scale on the test control plane: N two-node jobs created at once, against
the same number of pods created directly, in the same run.

    python bench/operator_scale.py [--jobs 100] [--repeats 3]

Raw: the bench creates the 2N pods itself (the same client concurrency it uses for the jobs).
hyft: it creates N HunyuanFineTunes and the operator (`hyft operator`, a separate process)
creates the Service, ConfigMap and two pods of each. Either way a pod counts from the moment
its batch started to the moment a watch sees it; a job's latency is that of its later pod.

API calls: the API server's apiserver_request_total (watches excluded), from the start of the
hyft batch until every job's status says its pods exist and the operator has been idle for a
few resync periods, less the bench's own requests. The operator's share per job is compared
with what it must write: 4 objects and the status writes.

Floor: what no operator can avoid here. The bench itself does a job's writes with no decisions and
no watch delay in between: it creates each HunyuanFineTune, then its Service, ConfigMap and two
pods as `hyft render` builds them, then one status write. Its p99 against the raw creates is the
best p99_vs_raw_creates any operator could reach on this machine and control plane.

CPU: the seconds each process (API server, etcd, operator, the bench) spent in each phase, per
job. On a machine with few cores the latencies follow the sum: it shows which side to make cheaper.

Each round has its own namespaces and a fresh operator; the figures are medians over the rounds
(the ratio: the median of each round's own ratio, whose two sides ran seconds apart).

Last line: p99_vs_raw_creates=<hyft p99 / raw p99> api_calls_per_job=<calls> floor_vs_raw_creates=<floor p99 / raw p99>
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for part in ("operator", "trainer", "envtest", "."):
    sys.path.insert(0, str(ROOT / part))

from kubernetes import client, config, watch  # noqa: E402

from hyft_envtest.build import ensure  # noqa: E402
from hyft_envtest.controlplane import ControlPlane  # noqa: E402
from hyft_operator import api, builders  # noqa: E402
from tests.jobs import cpu_job  # noqa: E402

CONCURRENCY = 16
IDLE_SECONDS = 6.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class PodWatch:
    """Records when each pod of a namespace is first seen."""

    def __init__(self, core: client.CoreV1Api, namespace: str):
        self.seen: dict[str, float] = {}
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, args=(core, namespace), daemon=True)
        self._thread.start()

    def _run(self, core, namespace):
        try:
            for event in self._watch.stream(core.list_namespaced_pod, namespace, timeout_seconds=600):
                self.seen.setdefault(event["object"].metadata.name, time.monotonic())
        except Exception:  # noqa: BLE001 - the control plane stopped under the watch
            pass

    def stop(self):
        self._watch.stop()


def request_counts(cp: ControlPlane) -> Counter:
    """Non-watch requests served so far by verb and resource, from the API server's own metrics."""
    with urllib.request.urlopen(f"{cp.server}/metrics", context=cp.ssl_context(), timeout=30) as resp:
        text = resp.read().decode()
    counts: Counter = Counter()
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{") and 'verb="WATCH"' not in line:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            sub = f"/{labels['subresource']}" if labels.get("subresource") else ""
            key = f"{labels.get('verb')} {labels.get('resource')}{sub}"
            counts[key] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds of the control plane's processes, the bench and (once started) the operator."""

    def __init__(self, cp: ControlPlane):
        self.pids = {p.name: p.popen.pid for p in cp.processes} | {"bench": os.getpid()}

    def read(self) -> Counter:
        return Counter({name: cpu_seconds(pid) for name, pid in self.pids.items()})

    @staticmethod
    def report(phase: str, spent: Counter, jobs: int) -> None:
        print(f"CPU per job, {phase}: " + ", ".join(f"{k} {1000 * v / jobs:.1f} ms" for k, v in spent.most_common()))


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def namespace(core: client.CoreV1Api, name: str) -> str:
    core.create_namespace({"metadata": {"name": name}})
    return name


def pod_latencies(core, ns: str, jobs: int, make, prefix: str) -> list[float]:
    """make(i) for each job, CONCURRENCY at a time; a job's latency runs from the batch's start to the
    moment the watch sees the later of its pods <prefix><i>-master-0 and <prefix><i>-worker-0."""
    watcher = PodWatch(core, ns)
    time.sleep(1.0)
    start = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(make, range(jobs)))
    wait_until(lambda: len(watcher.seen) >= 2 * jobs, 300, f"the pods {prefix}*")
    watcher.stop()
    return [max(watcher.seen[f"{prefix}{i}-{r}"] for r in ("master-0", "worker-0")) - start for i in range(jobs)]


def raw_pods(core, ns: str, jobs: int) -> list[float]:
    body = {"metadata": {}, "spec": {"containers": [{"name": "c", "image": "hyft-trainer:dev"}],
                                     "restartPolicy": "Never"}}

    def make(i):
        for role in ("master-0", "worker-0"):
            core.create_namespaced_pod(ns, {**body, "metadata": {"name": f"raw-{i}-{role}"}})

    return pod_latencies(core, ns, jobs, make, "raw-")


def floor_jobs(api_client, core, ns: str, jobs: int) -> list[float]:
    """A job's writes done by the bench itself, each right after the last: the floor under any operator."""
    custom = client.CustomObjectsApi(api_client)
    create = {"Pod": core.create_namespaced_pod, "Service": core.create_namespaced_service,
              "ConfigMap": core.create_namespaced_config_map}

    def make(i):
        created = custom.create_namespaced_custom_object(api.GROUP, api.VERSION, ns, api.PLURAL, cpu_job(f"f{i}"))
        job = api.HunyuanFineTune.model_validate(created)
        for obj in [builders.service(job), builders.config_map(job), *builders.gang(job, 0)]:
            create[obj["kind"]](ns, obj, _preload_content=False).read()
        custom.patch_namespaced_custom_object_status(api.GROUP, api.VERSION, ns, api.PLURAL, f"f{i}",
                                                     {"status": {"phase": "Pending", "nodes": {"created": 2}}})

    return pod_latencies(core, ns, jobs, make, "f")


def hyft_jobs(cp, api_client, core, ns: str, jobs: int) -> tuple[list[float], float]:
    custom = client.CustomObjectsApi(api_client)
    before = request_counts(cp)
    own = Counter({"GET ": 1, "POST hunyuanfinetunes": jobs})  # the bench's own: metrics reads, creates, lists

    def make(i):
        custom.create_namespaced_custom_object(api.GROUP, api.VERSION, ns, api.PLURAL, cpu_job(f"j{i}"))

    latencies = pod_latencies(core, ns, jobs, make, "j")

    def settled():
        own["LIST hunyuanfinetunes"] += 1
        items = custom.list_namespaced_custom_object(api.GROUP, api.VERSION, ns, api.PLURAL)["items"]
        return all((o.get("status") or {}).get("nodes", {}).get("created") == 2 for o in items)

    wait_until(settled, 300, "statuses with 2 created pods")
    # idle: whatever the operator does now, it does for nothing (resyncs)
    quiet_start = request_counts(cp)
    time.sleep(IDLE_SECONDS)
    after = request_counts(cp)
    own["GET "] += 2
    idle = sum((after - quiet_start).values()) - 1
    print(f"operator requests while idle for {IDLE_SECONDS:.0f}s: {idle} ({idle / jobs:.2f} per job)")
    operators = after - before - own
    print("operator requests per job: " + ", ".join(f"{k}: {v / jobs:.2f}" for k, v in operators.most_common()))
    return latencies, sum(operators.values()) / jobs


def one_round(cp: ControlPlane, api_client, core, cpu: CpuMeter, jobs: int, index: int, workdir: Path) -> dict:
    """Raw pod creates, the floor, then the same number of pods through hyft jobs with a fresh operator,
    each in a namespace of its own."""
    before = cpu.read()
    raw = raw_pods(core, namespace(core, f"bench-raw-{index}"), jobs)
    cpu.report("raw pod creates", cpu.read() - before, jobs)
    before = cpu.read()
    floor = floor_jobs(api_client, core, namespace(core, f"bench-floor-{index}"), jobs)
    cpu.report("floor (a job's writes by the bench)", cpu.read() - before, jobs)
    ns = f"bench-hyft-{index}"
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig),
           "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("operator", "trainer"))}
    log = workdir / f"operator-{index}.log"
    with log.open("w") as out:
        operator = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", ns, "-m", "hyft_operator.handlers"],
            env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        time.sleep(3)
        cpu.pids["operator"] = operator.pid
        before = cpu.read()
        ours, calls = hyft_jobs(cp, api_client, core, namespace(core, ns), jobs)
        cpu.report(f"hyft jobs (with {IDLE_SECONDS:.0f}s idle)", cpu.read() - before, jobs)
    except SystemExit:
        print(log.read_text()[-4000:])
        raise
    finally:
        operator.terminate()
        operator.wait(30)
        cpu.pids.pop("operator", None)
    tracebacks = len(re.findall("Traceback", log.read_text()))
    result = {"raw_p50": percentile(raw, 0.5), "raw_p99": percentile(raw, 0.99), "p50": percentile(ours, 0.5),
              "p99": percentile(ours, 0.99), "floor_p50": percentile(floor, 0.5), "floor_p99": percentile(floor, 0.99),
              "calls": calls, "tracebacks": tracebacks}
    print(f"round {index + 1}: raw pod creates p50 {result['raw_p50']:.2f}s p99 {result['raw_p99']:.2f}s; "
          f"floor p50 {result['floor_p50']:.2f}s p99 {result['floor_p99']:.2f}s; "
          f"hyft jobs p50 {result['p50']:.2f}s p99 {result['p99']:.2f}s; ratio {result['p99'] / result['raw_p99']:.2f}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ensure()
    with tempfile.TemporaryDirectory(prefix="hyft-scale-") as tmp, \
            ControlPlane(workdir=Path(tmp), scheduler=False, controller_manager=False, kwok=False) as cp:
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "hyft.io_hunyuanfinetunes.yaml"))
        cp.wait_established("hunyuanfinetunes.hyft.io")
        api_client = config.new_client_from_config(config_file=str(cp.kubeconfig))
        core = client.CoreV1Api(api_client)
        cpu = CpuMeter(cp)
        rounds = [one_round(cp, api_client, core, cpu, args.jobs, i, Path(tmp)) for i in range(args.repeats)]
        api_client.close()

    def median(key):
        return statistics.median(r[key] for r in rounds)

    ratio = statistics.median(r["p99"] / r["raw_p99"] for r in rounds)
    floor_ratio = statistics.median(r["floor_p99"] / r["raw_p99"] for r in rounds)
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {args.jobs} jobs x 2 pods; medians of "
          f"{args.repeats} rounds; operator tracebacks: {sum(r['tracebacks'] for r in rounds)}")
    print(f"raw pod creates: p50 {median('raw_p50'):.2f}s p99 {median('raw_p99'):.2f}s")
    print(f"floor:           p50 {median('floor_p50'):.2f}s p99 {median('floor_p99'):.2f}s (a job's writes, "
          "no operator)")
    print(f"hyft jobs:       p50 {median('p50'):.2f}s p99 {median('p99'):.2f}s")
    print(f"operator API calls per job: {median('calls'):.1f} (it creates 4 objects: Service, ConfigMap, 2 pods)")
    print(f"p99_vs_raw_creates={ratio:.2f} api_calls_per_job={median('calls'):.1f} "
          f"floor_vs_raw_creates={floor_ratio:.2f}")


if __name__ == "__main__":
    main()
