"""Training progress for the status, read from the trainer's Prometheus metrics (pure)."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from hyft_trainer.contract import CHECKPOINT_STEP, ETA, LOSS, STEP, TOKENS_PER_SECOND, TOTAL_STEPS

from .api import Progress


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
