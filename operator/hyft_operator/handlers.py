"""Kopf glue: thin handlers that call the Reconciler.

    kopf run -m hyft_operator.handlers --all-namespaces      (or: hyft operator)

Reconciles on every change of a HunyuanFineTune, on every event of a pod it owns,
and on a timer (deadlines, TTL, progress). Settings come from the environment:
HYFT_TRAINER_IMAGE, HYFT_TRAINER_IMAGE_PULL_POLICY, HYFT_METRICS_PORT (0: off),
HYFT_RESYNC_SECONDS, HYFT_SCRAPE_PROGRESS, HYFT_PEERING_LIFETIME.
"""
from __future__ import annotations

import os

import kopf
from kubernetes import client, config
from prometheus_client import start_http_server

from . import api, builders
from .reconciler import Reconciler

RESYNC_SECONDS = float(os.environ.get("HYFT_RESYNC_SECONDS", "10"))
_state: dict[str, Reconciler] = {}


def _api_client() -> client.ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    return client.ApiClient()


@kopf.on.login()
def login(**kwargs):
    # Kopf's own readers look KUBECONFIG up at call time (the client library's at import time).
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_) -> None:
    # Kopf's own bookkeeping goes to annotations under our prefix; the status is ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="hyft.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="hyft.io")
    settings.persistence.finalizer = "hyft.io/operator"
    settings.posting.enabled = False  # we post our own events, one per transition
    settings.watching.server_timeout = 300
    # A killed active replica is replaced by a standby after this long.
    settings.peering.lifetime = int(os.environ.get("HYFT_PEERING_LIFETIME", "60"))
    defaults = builders.OperatorDefaults(
        image=os.environ.get("HYFT_TRAINER_IMAGE", builders.OperatorDefaults.image),
        image_pull_policy=os.environ.get("HYFT_TRAINER_IMAGE_PULL_POLICY", builders.OperatorDefaults.image_pull_policy),
    )
    _state["reconciler"] = Reconciler(_api_client(), defaults,
                                      scrape_progress=os.environ.get("HYFT_SCRAPE_PROGRESS", "1") == "1")
    port = int(os.environ.get("HYFT_METRICS_PORT", "0"))
    if port:
        start_http_server(port)


def _reconcile(namespace: str, name: str) -> None:
    _state["reconciler"].reconcile(namespace, name)


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
def job_changed(type: str, name: str, namespace: str, **_) -> None:
    if type != "DELETED":
        _reconcile(namespace, name)


@kopf.on.event("", "v1", "pods", labels={builders.LABEL_JOB: kopf.PRESENT})
def pod_changed(labels: dict, namespace: str, **_) -> None:
    _reconcile(namespace, labels[builders.LABEL_JOB])


@kopf.timer(api.GROUP, api.VERSION, api.PLURAL, interval=RESYNC_SECONDS, sharp=False)
def resync(name: str, namespace: str, **_) -> None:
    _reconcile(namespace, name)
