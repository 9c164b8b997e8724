"""Training progress for the status, read from the trainer's Prometheus metrics (pure)."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from .api import Progress

# Metric names the trainer exports (hyft_trainer.metrics) that the status shows.
STEP = "hyft_train_global_step"
TOTAL_STEPS = "hyft_train_total_steps"
LOSS = "hyft_train_loss"
TOKENS_PER_SECOND = "hyft_train_tokens_per_second"
ETA = "hyft_train_eta_seconds"
CHECKPOINT_STEP = "hyft_train_last_checkpoint_step"


def parse_progress(text: str) -> Progress | None:
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (STEP, TOTAL_STEPS, LOSS, TOKENS_PER_SECOND, ETA, CHECKPOINT_STEP):
                values[sample.name] = sample.value
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
