"""Observe -> plan -> act for one HunyuanFineTune, with the Kubernetes API.

Level-based and crash-safe: deterministic names, create-if-absent (409 means
"already there"), 404 on delete means "already gone", and the status (with the
observed resourceVersion as a precondition) is written BEFORE pods are deleted
or created, so a crash between two calls converges on the next pass. The
operator never writes to spec.

Over 300 lines: one class holds what passes over a job share (the cache expectations, the scrapes,
the spec verdicts) with the API calls that act on a plan; the decisions are in lifecycle/.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from hyft_trainer.problems import describe

from . import api, builders, kueue, lifecycle, metrics
from .lifecycle import invalid
from .lifecycle.conditions import set_condition
from .lifecycle.gang import Event
from .lifecycle.observe import pod_view
from .progress import SCRAPE_INTERVAL_SECONDS, Scrape, parse_scrape
from .settings import OperatorSettings
from .status import TERMINAL_PHASES, ConditionType, Reason

log = logging.getLogger("hyft.operator")
CREATE_RETRY_SECONDS = 10.0
CACHE_WAIT_SECONDS = 2.0  # the watch event that brings the cache up to date also wakes the job
VISIBILITY_RETRY_SECONDS = 300.0  # Kueue's visibility API not served: asked again after this long
# One answer of Kueue's visibility API serves every queued job of its LocalQueue this long: with many
# queued jobs, one request per LocalQueue instead of one per job and pass.
QUEUE_LINE_SECONDS = 10.0


@dataclass(frozen=True)
class Expectation:
    created: set[tuple[str, int]] = field(default_factory=set)  # (pod name, attempt)
    deleted: set[str] = field(default_factory=set)  # pod UIDs
    until: float = field(default_factory=lambda: time.monotonic() + 10.0)  # then trust the cache anyway

    def met(self, pods: list[dict[str, Any]]) -> bool:
        if time.monotonic() > self.until:
            return True
        seen = {(p["metadata"]["name"], int(p["metadata"].get("labels", {}).get(builders.LABEL_ATTEMPT, -1)))
                for p in pods}
        uids = {p["metadata"]["uid"] for p in pods}
        return self.created <= seen and not self.deleted & uids


def output_volume_problem(job: api.HunyuanFineTune, pvc: dict[str, Any] | None) -> str | None:
    """Multi-node jobs need an output volume every node shares (DeepSpeed writes `latest` on rank 0 only)."""
    if job.spec.nodes == 1 or pvc is None:
        return None
    modes = (pvc.get("spec") or {}).get("accessModes") or []
    if "ReadWriteMany" in modes:
        return None
    name = pvc["metadata"]["name"]
    return (f"output volume {job.spec.output.volume!r} is PVC {name} with accessModes {modes}: a job with "
            f"{job.spec.nodes} nodes needs ReadWriteMany so that every node sees the same checkpoints")


def master_metrics_url(job: api.HunyuanFineTune) -> str:
    return (f"http://{builders.master_address(job.metadata['name'], job.metadata['namespace'])}:"
            f"{job.spec.metrics.port}/metrics")


def _api_message(err: ApiException) -> str:
    try:
        return str(json.loads(err.body).get("message", err.reason))
    except (TypeError, ValueError, AttributeError):
        return str(err.reason)


class JobGone(Exception):
    """The job was deleted: its loop ends."""


class Reconciler:
    def __init__(self, api_client: client.ApiClient, defaults: builders.OperatorDefaults,
                 scrape_progress: bool = True, scrape_timeout: float = 2.0,
                 metrics_url: Callable[[api.HunyuanFineTune], str] | None = None,
                 progress_write_seconds: float = OperatorSettings.model_fields["progress_seconds"].default):
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self._visibility_off_until = 0.0  # monotonic: Kueue's visibility API last answered it is not served
        self._queue_lines: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}  # (ns, LocalQueue): (at, answer)
        self.defaults = defaults
        self.scrape_progress = scrape_progress
        self.scrape_timeout = scrape_timeout
        self.metrics_url = metrics_url or master_metrics_url
        self.progress_write_seconds = progress_write_seconds
        self._progress_written: dict[tuple[str, str], float] = {}  # monotonic time of the last progress write
        # Progress is scraped beside the reconciles, never inside one: a slow or dead trainer endpoint
        # holds up no reconcile. A new value wakes the job's reconcile (on_progress, set by the daemon).
        self.on_progress: Callable[[str, str], None] = lambda namespace, name: None
        self._scrapes = ThreadPoolExecutor(4, thread_name_prefix="hyft-scrape")
        self._scrapes_seen: dict[tuple[str, str], Scrape] = {}
        self._scraping: set[tuple[str, str]] = set()
        self.phases = metrics.PhaseTracker()
        self._locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        # What the caches must show before a reconcile from them can be trusted (controller-runtime's
        # "expectations"): the resourceVersion our last status write replaced, the pods we created
        # (name, attempt) and the pod UIDs we deleted.
        self._replaced_version: dict[tuple[str, str], str] = {}
        self._expected: dict[tuple[str, str], Expectation] = {}
        # builders.check's verdict (None: passed) per job, for its (uid, generation)
        self._checked: dict[tuple[str, str], tuple[tuple[str, int], str | None]] = {}

    # ------------------------------------------------------------------ entry
    def reconcile(self, namespace: str, name: str, obj: dict[str, Any] | None = None,
                  pods: list[dict[str, Any]] | None = None,
                  workloads: list[dict[str, Any]] | None = None) -> float | None:
        """One pass for one job; returns seconds until it wants to run again (or None). `obj`, `pods`
        and `workloads` (Kueue's) come from the watch caches; without them the pass reads them from the API."""
        with self._locks[(namespace, name)], metrics.RECONCILE_SECONDS.time():
            key = (namespace, name)
            if obj is not None and obj["metadata"].get("resourceVersion") == self._replaced_version.get(key):
                return CACHE_WAIT_SECONDS  # our own status write is not in the cache yet
            if pods is not None and not self._expected.get(key, Expectation()).met(pods):
                return CACHE_WAIT_SECONDS  # our own pod creates/deletes are not in the cache yet
            self._expected.pop(key, None)
            try:
                requeue = self._reconcile(namespace, name, obj, pods, workloads)
                metrics.RECONCILES.labels("ok").inc()
                return requeue
            except ApiException as err:
                if err.status == 409:  # someone wrote in between: observe again
                    metrics.RECONCILES.labels("conflict").inc()
                    return 1.0
                metrics.RECONCILES.labels("error").inc()
                if err.status == 404 and obj is not None and self._gone(namespace, name, obj):
                    raise JobGone(f"{namespace}/{name}") from None
                raise

    def forget(self, namespace: str, name: str) -> None:
        with self._locks[(namespace, name)]:
            self._forget((namespace, name))

    def _gone(self, namespace: str, name: str, obj: dict[str, Any]) -> bool:
        """After a 404: whether the job the cache showed is gone (a deletion the watch missed), forgotten."""
        try:
            gone = self._get(namespace, name)["metadata"]["uid"] != obj["metadata"]["uid"]
        except ApiException as err:
            if err.status != 404:
                raise
            gone = True
        if gone:
            self._forget((namespace, name))
        return gone

    def _reconcile(self, namespace: str, name: str, obj: dict[str, Any] | None,
                   cached_pods: list[dict[str, Any]] | None,
                   cached_workloads: list[dict[str, Any]] | None = None) -> float | None:
        metrics.watch_namespace(namespace)
        if obj is None:
            try:
                obj = self._get(namespace, name)
            except ApiException as err:
                if err.status == 404:
                    self._forget((namespace, name))
                    return None
                raise
        if obj["metadata"].get("deletionTimestamp"):
            self._forget((namespace, name))
            return None
        try:
            job = api.HunyuanFineTune.model_validate(obj)
        except ValidationError as err:  # a CRD older than this operator
            self._write_invalid(obj, "; ".join(describe(err)))
            return None
        problem = self._spec_problem(job)

        listed = self._list_pods(namespace, name) if cached_pods is None else cached_pods
        pods = [p for p in listed if self._owned(p, obj)]
        views = [pod_view(p) for p in pods]
        now = dt.datetime.now(dt.UTC)
        live = job.status.phase not in TERMINAL_PHASES
        if problem and live and not invalid.running_attempt(job, views):
            self._write_invalid(obj, problem)
            return 0.0 if views else None  # next pass: Failed, and lifecycle deletes what still runs
        if not job.status.startTime and not views:
            unshared = self._preflight(job)
            if unshared:
                self._write_invalid(obj, unshared, reason=Reason.OUTPUT_NOT_SHARED)
                return None
        watching = self.scrape_progress and job.spec.metrics.enabled
        scrape = self._latest_scrape(job) if watching and job.status.phase == "Running" else None
        if scrape and scrape.progress:
            job.status.progress = scrape.progress
        workload = self._workload(job, obj, cached_workloads) if job.spec.scheduling.queueName else None
        workload_view = kueue.workload_view(workload) if workload else None
        if workload_view and workload_view.active and not workload_view.reserved:
            workload_view = replace(workload_view, position=self._queue_position(
                namespace, job.spec.scheduling.queueName, workload["metadata"]["name"]))
        plan = lifecycle.plan(job, views, now, scrape, watching, workload_view)
        if problem and live and (failure := invalid.edited(job, plan, problem, now)):
            self._write_invalid(obj, failure)
            return 0.0
        invalid.settle(plan, problem)

        written = api.HunyuanFineTuneStatus.model_validate(obj.get("status") or {})
        if plan.status != written and not self._progress_held((namespace, name), written, plan.status):
            self._write_status(obj, plan.status)
            if plan.status.progress != written.progress:
                self._progress_written[(namespace, name)] = time.monotonic()
        if plan.create:  # the pods mount the ConfigMap and resolve MASTER_ADDR through the Service
            self._ensure(builders.service(job))
            self._ensure(builders.config_map(job))
        uids = {view.name: view.uid for view in views}
        self._expected[(namespace, name)] = Expectation(
            created={(builders.pod_name(name, rank), plan.status.attempt) for rank in plan.create},
            deleted={uids[pod_name] for pod_name in plan.delete})
        for pod_name in plan.delete:
            self._delete_pod(namespace, pod_name, uids[pod_name])
        if plan.workload and not self._act_on_workload(job, obj, workload, plan.workload, plan.status, now):
            return CREATE_RETRY_SECONDS
        flavors = self._flavors(workload_view.flavors) if plan.create and workload_view else {}
        for rank in plan.create:
            placement = kueue.placement(workload, flavors, kueue.pod_set(rank)) if workload else kueue.NO_PLACEMENT
            try:
                self._ensure(builders.pod(job, rank, plan.status.attempt, self.defaults, plan.status.gangNodes,
                                          placement))
            except ApiException as err:
                pod_name = builders.pod_name(name, rank)
                self._expected.pop((namespace, name), None)
                if err.status in (400, 422):  # the pod itself is invalid: so is the spec, and retrying cannot help
                    self._write_invalid(self._get(namespace, name),
                                        f"the API server refuses pod {pod_name}: {_api_message(err)}")
                    return 0.0  # next pass: Failed, the gang's other pods deleted
                if err.status != 403:
                    raise
                # Admission refused the pod (quota, missing PriorityClass, policy): say so and retry.
                self._write_create_failure(namespace, name, pod_name, err)
                return CREATE_RETRY_SECONDS
        if plan.create and len(plan.create) + len(views) == job.spec.nodes and plan.status.attempt == 0:
            created = dt.datetime.fromisoformat(obj["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
            metrics.GANG_CREATION.observe(max(0.0, (now - created).total_seconds()))
        if plan.status.restarts > job.status.restarts:
            metrics.GANG_RESTARTS.labels(namespace).inc()
        metrics.count_transition(namespace, job.status.phase, plan.status.phase)
        for event in plan.events:
            self._event(obj, event)
        self.phases.observe((namespace, name), plan.status.phase)
        return plan.requeue_after

    def _progress_held(self, key: tuple[str, str], written: api.HunyuanFineTuneStatus,
                       status: api.HunyuanFineTuneStatus) -> bool:
        """Whether to leave a status unwritten for now: only its training progress is new, and the last
        progress went out less than progress_write_seconds ago. The first progress, and any other
        change (which carries the latest progress with it), go out at once."""
        if written.progress is None:
            return False
        unchanged = {"progress": written.progress, "progressSummary": written.progressSummary}
        if status.model_copy(update=unchanged) != written:
            return False
        return time.monotonic() - self._progress_written.get(key, -float("inf")) < self.progress_write_seconds

    def _spec_problem(self, job: api.HunyuanFineTune) -> str | None:
        """What the API server cannot check (what the trainer refuses, pass-through Kubernetes objects),
        checked once per generation: the verdict depends on the spec alone."""
        meta = job.metadata
        key, seen = (meta["namespace"], meta["name"]), (meta.get("uid"), meta.get("generation"))
        cached = self._checked.get(key)
        if cached and cached[0] == seen:
            return cached[1]
        try:
            builders.check(job)
            problem = None
        except builders.InvalidSpec as err:
            problem = str(err)
        self._checked[key] = (seen, problem)
        return problem

    def _forget(self, key: tuple[str, str]) -> None:
        """A deleted job: nothing of it stays in memory (its lock aside: a reconcile may hold it)."""
        self.phases.observe(key, None)
        for seen in (self._scrapes_seen, self._replaced_version, self._expected, self._checked,
                     self._progress_written):
            seen.pop(key, None)

    # ---------------------------------------------------------------- observe
    def _list_pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        result = self.core.list_namespaced_pod(namespace, label_selector=f"{builders.LABEL_JOB}={name}",
                                               _preload_content=False)
        return json.loads(result.data)["items"]

    def _workload(self, job: api.HunyuanFineTune, obj: dict[str, Any],
                  cached: list[dict[str, Any]] | None) -> dict[str, Any] | None:
        """The job's Kueue Workload, if it exists. One the cache does not show is read from the API: the
        watch may have started after it was created (Kueue installed after the operator), or not at all."""
        if not cached:
            try:
                cached = [self.custom.get_namespaced_custom_object(
                    kueue.GROUP, kueue.VERSION, job.metadata["namespace"], kueue.PLURAL, job.metadata["name"])]
            except ApiException as err:
                if err.status != 404:
                    raise
                cached = []
        return next((w for w in cached if self._owned(w, obj) and not w["metadata"].get("deletionTimestamp")), None)

    def _priority(self, ref: kueue.PriorityClassRef | None) -> int | None:
        if ref is None:
            return None
        if ref.group == kueue.GROUP:  # Kueue's WorkloadPriorityClass
            return self.custom.get_cluster_custom_object(ref.group, kueue.VERSION, kueue.WORKLOAD_PRIORITY_CLASSES,
                                                         ref.name)["value"]
        return client.SchedulingV1Api(self.core.api_client).read_priority_class(ref.name).value

    def _queue_position(self, namespace: str, queue: str, workload: str) -> kueue.QueuePosition | None:
        """Where Kueue's visibility API places the pending Workload; None where it is not served (Kueue
        without VisibilityOnDemand, its APIService down, no RBAC): the status then says no place."""
        now = time.monotonic()
        if now < self._visibility_off_until:
            return None
        at, summary = self._queue_lines.get((namespace, queue), (-QUEUE_LINE_SECONDS, {}))
        if now - at < QUEUE_LINE_SECONDS:
            return kueue.queue_position(summary, workload)
        api_client = self.custom.api_client  # the client has no method for another API's subresource
        try:
            request = api_client.param_serialize("GET", kueue.pending_workloads_path(namespace, queue),
                                                 header_params={"Accept": "application/json"},
                                                 auth_settings=["BearerToken"])
            response = api_client.call_api(*request)
            response.read()
            summary = api_client.response_deserialize(response, {"200": "object"}).data
            self._queue_lines[(namespace, queue)] = (now, summary)
        except ApiException as err:
            self._visibility_off_until = time.monotonic() + VISIBILITY_RETRY_SECONDS
            log.info("Kueue's visibility API answers %s %s: queued jobs show no place in their queue; asking again "
                     "in %.0fs", err.status, err.reason, VISIBILITY_RETRY_SECONDS)
            return None
        return kueue.queue_position(summary, workload)

    def _flavors(self, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """The ResourceFlavors Kueue admitted the Workload on, by name."""
        return {f: self.custom.get_cluster_custom_object(kueue.GROUP, kueue.VERSION, kueue.FLAVORS, f) for f in names}

    @staticmethod
    def _owned(pod: dict[str, Any], owner: dict[str, Any]) -> bool:
        uid = owner["metadata"]["uid"]
        return any(ref.get("uid") == uid for ref in pod["metadata"].get("ownerReferences") or [])

    def _preflight(self, job: api.HunyuanFineTune) -> str | None:
        volume = next(v for v in job.spec.volumes if v.name == job.spec.output.volume)
        claim = (volume.persistentVolumeClaim or {}).get("claimName")
        if job.spec.nodes == 1 or not claim:
            return None
        try:
            pvc = self.core.read_namespaced_persistent_volume_claim(claim, job.metadata["namespace"])
        except ApiException as err:
            if err.status == 404:
                return None  # the pods wait for it like any pod would; the scheduler says so
            raise
        return output_volume_problem(job, self.core.api_client.sanitize_for_serialization(pvc))

    def _latest_scrape(self, job: api.HunyuanFineTune) -> Scrape | None:
        """The last answer of the master trainer; starts a new scrape when that is older than
        SCRAPE_INTERVAL_SECONDS."""
        key = (job.metadata["namespace"], job.metadata["name"])
        scrape = self._scrapes_seen.get(key)
        if key not in self._scraping and (scrape is None or time.time() - scrape.at >= SCRAPE_INTERVAL_SECONDS):
            self._scraping.add(key)
            self._scrapes.submit(self._scrape, key, self.metrics_url(job))
        return scrape

    def _scrape(self, key: tuple[str, str], url: str) -> None:
        try:
            with urllib.request.urlopen(url, timeout=self.scrape_timeout) as resp:
                fresh = parse_scrape(resp.read().decode(), time.time())
        except (OSError, ValueError):
            return  # progress is best effort; without an answer the timeouts judge by the pods
        finally:
            self._scraping.discard(key)
        old = self._scrapes_seen.get(key)
        if fresh.progress is None and old:  # a restarted trainer before its first step: keep the last
            fresh = replace(fresh, progress=old.progress)
        self._scrapes_seen[key] = fresh
        before = old or Scrape(0, None, None)
        if fresh.progress != before.progress or fresh.preflight_seconds != before.preflight_seconds:
            self.on_progress(*key)

    # -------------------------------------------------------------------- act
    def _write_status(self, obj: dict[str, Any], status: api.HunyuanFineTuneStatus) -> None:
        meta = obj["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status.model_dump(mode="json")}
        self.custom.patch_namespaced_custom_object_status(api.GROUP, api.VERSION, meta["namespace"], api.PLURAL,
                                                          meta["name"], body)
        self._replaced_version[(meta["namespace"], meta["name"])] = meta["resourceVersion"]

    def _act_on_workload(self, job: api.HunyuanFineTune, obj: dict[str, Any], workload: dict[str, Any] | None,
                         action: kueue.Action, status: api.HunyuanFineTuneStatus, now: dt.datetime) -> bool:
        """Carry out the plan's Workload change; False if it must be retried (said in an event)."""
        namespace, name = job.metadata["namespace"], job.metadata["name"]
        args = (kueue.GROUP, kueue.VERSION, namespace, kueue.PLURAL)
        if action == kueue.Action.CREATE:
            nodes = status.gangNodes or job.spec.nodes
            master = builders.pod(job, 0, status.attempt, self.defaults, nodes)
            worker = builders.pod(job, 1, status.attempt, self.defaults, nodes) if nodes > 1 else None
            try:
                priority = self._priority(kueue.priority_class(job))
                self.custom.create_namespaced_custom_object(*args, kueue.workload(
                    job, master, worker, nodes, builders.owner_reference(job), builders.labels(name), priority))
            except ApiException as err:
                # Kueue not installed, no such (Workload)PriorityClass, or the operator may not create Workloads
                if err.status in (404, 403):
                    message = (f"spec.scheduling.queueName: cannot create the Kueue Workload "
                               f"({kueue.GROUP}/{kueue.VERSION}): {_api_message(err)}")
                    log.error("[%s/%s] %s", namespace, name, message)
                    self._event(obj, Event("Warning", Reason.QUEUED, message))
                    return False
                if err.status != 409:
                    raise
            return True
        assert workload is not None
        meta = workload["metadata"]
        if action == kueue.Action.DELETE:
            try:
                self.custom.delete_namespaced_custom_object(*args, meta["name"], body=client.V1DeleteOptions(
                    preconditions=client.V1Preconditions(uid=meta["uid"])))
            except ApiException as err:
                if err.status not in (404, 409):  # already gone (a stale cache), or another one by that name
                    raise
        elif action in (kueue.Action.ACTIVATE, kueue.Action.DEACTIVATE):
            self.custom.patch_namespaced_custom_object(
                *args, meta["name"], {"metadata": {"resourceVersion": meta["resourceVersion"]},
                                      "spec": {"active": action == kueue.Action.ACTIVATE}})
        else:
            patch = (kueue.released(workload, now) if action == kueue.Action.RELEASE else
                     kueue.pods_ready(workload, now) if action == kueue.Action.PODS_READY else
                     kueue.finished(workload, now, status.phase == "Succeeded", status.message))
            self.custom.patch_namespaced_custom_object_status(*args, meta["name"], patch)
        log.info("[%s/%s] Kueue workload: %s", namespace, name, action)
        return True

    def _get(self, namespace: str, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, name)

    def _write_create_failure(self, namespace: str, name: str, pod_name: str, err: ApiException) -> None:
        message = f"cannot create pod {pod_name}: {_api_message(err)}"
        obj = self._get(namespace, name)
        status = api.HunyuanFineTuneStatus.model_validate(obj.get("status") or {})
        now = dt.datetime.now(dt.UTC)
        set_condition(status.conditions, ConditionType.CREATED, "False", Reason.POD_CREATION_FAILED, message, now,
                      obj["metadata"].get("generation"))
        if status.message != message:
            status.message = message
            self._write_status(obj, status)
            self._event(obj, Event("Warning", Reason.POD_CREATION_FAILED, message))

    def _write_invalid(self, obj: dict[str, Any], message: str, reason: str = Reason.INVALID_SPEC) -> None:
        written = api.HunyuanFineTuneStatus.model_validate(obj.get("status") or {})
        status = invalid.failed(written, message, dt.datetime.now(dt.UTC), obj["metadata"].get("generation"), reason)
        if status is None:
            return
        self._write_status(obj, status)
        metrics.count_transition(obj["metadata"]["namespace"], written.phase, "Failed")
        self._event(obj, Event("Warning", reason, message))

    def _ensure(self, desired: dict[str, Any]) -> None:
        """Create if absent. An existing object with our deterministic name is adopted as is."""
        kind, meta = desired["kind"], desired["metadata"]
        create = {"Pod": self.core.create_namespaced_pod, "Service": self.core.create_namespaced_service,
                  "ConfigMap": self.core.create_namespaced_config_map}[kind]
        try:
            # The answer is read (the connection goes back to the pool) but not decoded into client models
            create(meta["namespace"], desired, _preload_content=False).read()
        except ApiException as err:
            if err.status != 409:
                raise

    def _delete_pod(self, namespace: str, name: str, uid: str) -> None:
        """Delete exactly the pod observed: under the same name the next attempt's pod may already
        exist (a stale view), and the UID precondition leaves it alone (409)."""
        try:
            self.core.delete_namespaced_pod(name, namespace, body=client.V1DeleteOptions(
                preconditions=client.V1Preconditions(uid=uid)))
        except ApiException as err:
            if err.status not in (404, 409):
                raise

    def _event(self, obj: dict[str, Any], event: Event) -> None:
        meta = obj["metadata"]
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta["uid"]},
            "type": event.type, "reason": event.reason, "message": event.message[:1024],
            "source": {"component": "hyft-operator"}, "reportingComponent": "hyft-operator",
            "reportingInstance": "hyft-operator",
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], body)
        except ApiException as err:  # events are best effort
            log.warning("could not post event %s for %s/%s: %s", event.reason, meta["namespace"], meta["name"],
                        err.reason)
