"""Kopf glue: thin handlers around the Reconciler.

    kopf run -m hyft_operator.handlers --all-namespaces      (or: hyft operator)

One async daemon per HunyuanFineTune runs its reconciles, one at a time: at once
when the job or one of its pods changes (the event handlers only wake it), when
the last plan asked for it (a deadline, a TTL, a retry: lifecycle's
requeue_after, to the second), and otherwise every resync_seconds. It reads
the job from Kopf's live body and its pods from a Kopf index (both fed by the
watches), so a reconcile that changes nothing makes no API call (but a queued job's place in line:
Kueue's visibility API, one request per LocalQueue and QUEUE_LINE_SECONDS). The blocking
reconcile runs in a worker thread (reconcile_workers of them), so a slow
API call or progress scrape holds up only its own job. Kopf stops the daemons
while peering pauses this replica. A job's daemon ends when the job is deleted,
and no finalizer holds the deletion up (_without_finalizers). Settings: settings.py,
read once at start-up.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import kopf
from kubernetes import client, config
from prometheus_client import start_http_server

from . import api, builders, kueue
from .reconciler import JobGone, Reconciler
from .settings import OperatorSettings

FINALIZER = "hyft.io/operator"  # earlier builds put it on every job; Kopf now takes it off the jobs it sees
_state: dict = {}  # what configure() sets up: the settings, the reconciler and its worker threads


def _api_client() -> client.ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    return client.ApiClient()


class _NoDiffBase(kopf.AnnotationsDiffBaseStorage):
    """Kopf builds each event's "essence" (a deep copy of the whole body, managedFields
    included) for on.create/on.update handlers to diff. hyft has none: its daemon reads the
    live body. At 100 jobs created at once that copying was a tenth of the operator's CPU."""

    def build(self, *, body: kopf.Body, extra_fields=None) -> kopf.BodyEssence:
        return kopf.BodyEssence()


@kopf.on.login()
def login(**kwargs):
    # Kopf's own readers look KUBECONFIG up at call time (the client library's at import time).
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_) -> None:
    # Kopf's own bookkeeping goes to annotations under our prefix; the status is ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="hyft.io")
    settings.persistence.diffbase_storage = _NoDiffBase(prefix="hyft.io")
    settings.persistence.finalizer = FINALIZER
    settings.posting.enabled = False  # we post our own events, one per transition
    # Kopf logs every handler call ("Handler 'pod_changed' succeeded": one per pod event); at scale
    # that is most of the log and a share of the CPU. Our own log says what happened to each job.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    demote_retried_requests()
    settings.watching.server_timeout = 300
    # A killed active replica is replaced by a standby after this long.
    ours = _state["settings"] = OperatorSettings.from_env()
    settings.peering.lifetime = ours.peering_lifetime
    defaults = builders.OperatorDefaults(image=ours.trainer_image, image_pull_policy=ours.trainer_image_pull_policy)
    reconciler = Reconciler(_api_client(), defaults, scrape_progress=ours.scrape_progress,
                            progress_write_seconds=ours.progress_seconds)
    loop = asyncio.get_running_loop()
    reconciler.on_progress = lambda namespace, name: loop.call_soon_threadsafe(_wake, namespace, name)
    _state["reconciler"] = reconciler
    # Reconciles block on API calls, not on the CPU: many jobs at once need more threads than asyncio's default.
    _state["workers"] = ThreadPoolExecutor(ours.reconcile_workers, thread_name_prefix="hyft-reconcile")
    if ours.metrics_port:
        start_http_server(ours.metrics_port)


class _RetriedAsWarning(logging.Filter):
    """Kopf logs each failed try of an API request it retries at ERROR ("Request attempt #1/9 failed; will
    retry: ... 429 storage is (re)initializing"). An ERROR here means a person must act; a fault that is
    retried is a WARNING. The last try's failure ("escalating") stays an ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and "failed; will retry" in record.getMessage():
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


_DEMOTE = _RetriedAsWarning()


def demote_retried_requests() -> None:
    """On every Kopf logger (a logger's filters see only the records logged on it, whatever their handler)."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.split(".")[0] == "kopf" and isinstance(logger, logging.Logger) and _DEMOTE not in logger.filters:
            logger.addFilter(_DEMOTE)


_wakeups: dict[tuple[str, str], asyncio.Event] = {}  # each running daemon's, by job
_deleted: set[str] = set()  # uids of deleted jobs whose daemon has yet to end
log = logging.getLogger("hyft.operator")
ERROR_RETRY_SECONDS = 5.0


def _wake(namespace: str, name: str) -> None:
    if (namespace, name) in _wakeups:  # a job whose daemon still runs
        _wakeups[(namespace, name)].set()


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def job_changed(type: str, name: str, namespace: str, uid: str, **_) -> None:
    if type == "DELETED" and (namespace, name) in _wakeups:
        _deleted.add(uid)
    _wake(namespace, name)


@kopf.index("", "v1", "pods", labels={builders.LABEL_JOB: kopf.PRESENT})
def job_pods(namespace: str, labels: dict, body: kopf.Body, **_) -> dict:
    """Each job's pods, kept current by the pod watch (Kopf fills it before any handler runs)."""
    # Kopf swaps a new raw object in on each event and never changes an old one: a shallow copy
    # taken on the event loop is a consistent snapshot (and the reconciler only reads it).
    return {(namespace, labels[builders.LABEL_JOB]): dict(body)}


@kopf.on.event("", "v1", "pods", labels={builders.LABEL_JOB: kopf.PRESENT})
async def pod_changed(labels: dict, namespace: str, **_) -> None:
    _wake(namespace, labels[builders.LABEL_JOB])


# Kueue's Workloads of hyft's jobs (spec.scheduling.queueName): admission and eviction wake the job. Where
# Kueue is not installed, Kopf says once at start-up that it cannot serve them, and watches from the
# moment its CRDs appear.
@kopf.index(kueue.GROUP, kueue.VERSION, kueue.PLURAL, labels={builders.LABEL_JOB: kopf.PRESENT})
def job_workloads(namespace: str, labels: dict, body: kopf.Body, **_) -> dict:
    return {(namespace, labels[builders.LABEL_JOB]): dict(body)}


@kopf.on.event(kueue.GROUP, kueue.VERSION, kueue.PLURAL, labels={builders.LABEL_JOB: kopf.PRESENT})
async def workload_changed(labels: dict, namespace: str, **_) -> None:
    _wake(namespace, labels[builders.LABEL_JOB])


@kopf.daemon(api.GROUP, api.VERSION, api.PLURAL, cancellation_timeout=10)
async def keep_reconciled(stopped: kopf.DaemonStopped, name: str, namespace: str, uid: str, body: kopf.Body,
                          job_pods: kopf.Index, job_workloads: kopf.Index, **_) -> None:
    key = (namespace, name)
    wakeup = _wakeups[key] = asyncio.Event()  # a deleted namesake's daemon may still be ending: this one wins
    loop = asyncio.get_running_loop()
    try:
        while not stopped and uid not in _deleted:
            wakeup.clear()  # an event during the reconcile below sets it again: one more pass
            # body is Kopf's live view of the job: the latest watched version (snapshot as above)
            reconcile = functools.partial(_state["reconciler"].reconcile, namespace, name, obj=dict(body),
                                          pods=list(job_pods.get(key, [])),
                                          workloads=list(job_workloads.get(key, [])))
            try:
                requeue = await loop.run_in_executor(_state["workers"], reconcile)
            except JobGone:  # deleted while the watch was away: no DELETED event came
                break
            except Exception:  # noqa: BLE001 - logged; the job is retried, the daemon lives on
                log.exception("[%s/%s] reconcile failed; retrying in %ss", namespace, name, ERROR_RETRY_SECONDS)
                requeue = ERROR_RETRY_SECONDS
            resync = _state["settings"].resync_seconds
            wait = resync if requeue is None else min(max(requeue, 0.0), resync)
            woken = asyncio.ensure_future(wakeup.wait())
            stopping = asyncio.ensure_future(stopped.wait())
            await asyncio.wait([woken, stopping], timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
            stopping.cancel()
    finally:
        if _wakeups.get(key) is wakeup:
            del _wakeups[key]
        if uid in _deleted:
            _deleted.discard(uid)
            await loop.run_in_executor(_state["workers"], _state["reconciler"].forget, namespace, name)


def _without_finalizers(registry: kopf.OperatorRegistry) -> None:
    """Kopf puts a finalizer on every resource that has a daemon, so that it can stop the daemon
    before the resource goes. hyft's daemon ends itself on the DELETED event (or on the 404 of a
    deletion the watch missed), and the job's children go by their owner references. So the
    finalizer only cost a write per job, and held every deletion up while no operator ran (an
    uninstalled or crashed operator): JobSet and Kubeflow's training operator add none either.
    Kopf has no public switch for it (nolar/kopf#896): its own handler record is rewritten."""
    spawning = registry._spawning
    spawning._handlers = [dataclasses.replace(h, requires_finalizer=False) for h in spawning._handlers]


_without_finalizers(kopf.get_default_registry())
