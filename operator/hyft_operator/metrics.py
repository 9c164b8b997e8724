"""The operator's own Prometheus metrics."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from .status import PHASES, TERMINAL_PHASES

RECONCILES = Counter("hyft_operator_reconciles_total", "Reconciles of HunyuanFineTune resources", ["result"])
RECONCILE_SECONDS = Histogram("hyft_operator_reconcile_duration_seconds", "Time one reconcile took")
JOBS = Gauge("hyft_operator_jobs", "HunyuanFineTune resources by phase", ["phase"])
GANG_RESTARTS = Counter("hyft_operator_gang_restarts_total", "Whole-gang restarts after a pod failure",
                        ["namespace"])
JOBS_FINISHED = Counter("hyft_operator_jobs_finished_total",
                        "HunyuanFineTune resources that reached Succeeded or Failed (counted on the transition)",
                        ["namespace", "phase"])
GANG_CREATION = Histogram("hyft_operator_gang_creation_seconds",
                          "Time from a resource's creation to all of its first gang's pods created",
                          buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))


def watch_namespace(namespace: str) -> None:
    """Create a namespace's counters at 0: Prometheus' increase() cannot see the
    first event of a series that appears already at 1."""
    GANG_RESTARTS.labels(namespace)
    for phase in TERMINAL_PHASES:
        JOBS_FINISHED.labels(namespace, phase)


def count_transition(namespace: str, old_phase: str, new_phase: str) -> None:
    if new_phase != old_phase and new_phase in TERMINAL_PHASES:
        JOBS_FINISHED.labels(namespace, new_phase).inc()


class PhaseTracker:
    """Keeps the last phase per job so that the jobs-by-phase gauge stays exact."""

    def __init__(self) -> None:
        self._phases: dict[tuple[str, str], str] = {}
        for phase in PHASES:
            JOBS.labels(phase).set(0)

    def observe(self, key: tuple[str, str], phase: str | None) -> None:
        if phase is None:
            self._phases.pop(key, None)
        else:
            self._phases[key] = phase
        for p in PHASES:
            JOBS.labels(p).set(sum(1 for v in self._phases.values() if v == p))
