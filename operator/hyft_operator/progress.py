"""Training progress for the status, and the trainer's clock for stall and start-up timeouts,
read from the trainer's Prometheus metrics (pure)."""
from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from hyft_trainer.contract import (
    CHECKPOINT_STEP,
    ETA,
    HEARTBEAT,
    LAST_STEP_TIME,
    LOSS,
    PREFLIGHT_SECONDS,
    PROCESS_START,
    STEP,
    TOKENS_PER_SECOND,
    TOTAL_STEPS,
)

from .status import Progress

SCRAPE_INTERVAL_SECONDS = 5.0  # how often the master trainer's metrics are read while the gang runs
READ = (STEP, TOTAL_STEPS, LOSS, TOKENS_PER_SECOND, ETA, CHECKPOINT_STEP, LAST_STEP_TIME, PROCESS_START, HEARTBEAT,
        PREFLIGHT_SECONDS)


@dataclass(frozen=True)
class TrainerClock:
    """One scrape of the master trainer in its own clock: when its process started, its last step in
    this process (None before the first), and its time at the scrape."""

    started: float
    last_step: float | None
    now: float
    step: int | None

    @property
    def idle_seconds(self) -> float:
        """Since the last step, or since the start before the first one."""
        return self.now - (self.last_step if self.last_step is not None else self.started)


@dataclass(frozen=True)
class Scrape:
    """The latest answer of a job's master trainer."""

    at: float  # the operator's unix time when it came
    progress: Progress | None
    clock: TrainerClock | None
    preflight_seconds: float | None = None  # present once every rank passed the preflight


def _values(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in READ:
                values[sample.name] = sample.value
    return values


def parse_progress(text: str) -> Progress | None:
    return progress_of(_values(text))


def parse_scrape(text: str, at: float) -> Scrape:
    values = _values(text)
    return Scrape(at, progress_of(values), clock_of(values), values.get(PREFLIGHT_SECONDS))


def progress_of(values: dict[str, float]) -> Progress | None:
    if STEP not in values:
        return None
    step, total = int(values[STEP]), int(values.get(TOTAL_STEPS, 0))
    return Progress(
        step=step,
        totalSteps=total,
        percent=round(100.0 * step / total, 1) if total else 0.0,
        loss=values.get(LOSS),
        tokensPerSecond=values.get(TOKENS_PER_SECOND),
        etaSeconds=values.get(ETA),
        lastCheckpointStep=int(values[CHECKPOINT_STEP]) if CHECKPOINT_STEP in values else None,
    )


def clock_of(values: dict[str, float]) -> TrainerClock | None:
    if PROCESS_START not in values or HEARTBEAT not in values:
        return None
    return TrainerClock(started=values[PROCESS_START], last_step=values.get(LAST_STEP_TIME), now=values[HEARTBEAT],
                        step=int(values[STEP]) if STEP in values else None)
