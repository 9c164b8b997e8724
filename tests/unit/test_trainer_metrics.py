"""The trainer's Prometheus series exist only once they have a value: a 0 loss or a
1970 last-step time before the first step would be read as real (and fire the stall alert)."""
from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hyft_trainer.metrics import MetricsCallback, TrainingMetrics


def exported(metrics: TrainingMetrics) -> dict[str, float]:
    text = generate_latest(metrics.registry).decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.labels.get("hyft_job") == "job-a" and s.labels.get("node_rank") == "0"}


def test_series_appear_with_their_first_value():
    metrics = TrainingMetrics("job-a", 0)
    assert exported(metrics) == {}  # model loading: nothing to alert on yet
    callback = MetricsCallback(metrics, global_batch=8)
    state = SimpleNamespace(max_steps=100, global_step=0, num_input_tokens_seen=0, epoch=0.0)
    callback.on_train_begin(None, state, None)
    assert exported(metrics) == {"hyft_train_total_steps": 100, "hyft_train_global_step": 0}

    state.global_step, state.num_input_tokens_seen, state.epoch = 1, 4096, 0.01
    callback.on_step_end(None, state, None)
    callback.on_log(None, state, None, logs={"loss": 2.5, "learning_rate": 1e-4, "grad_norm": 0.75})
    values = exported(metrics)
    assert values["hyft_train_loss"] == 2.5 and values["hyft_train_grad_norm"] == 0.75
    assert values["hyft_train_global_step"] == 1 and values["hyft_train_last_step_timestamp_seconds"] > 1.7e9
    assert values["hyft_train_step_duration_seconds_count"] == 1
    assert "hyft_train_eval_loss" not in values and "hyft_train_last_checkpoint_step" not in values

    callback.on_log(None, state, None, logs={"eval_loss": 2.75})
    callback.on_save(None, state, None)
    values = exported(metrics)
    assert values["hyft_train_eval_loss"] == 2.75 and values["hyft_train_last_checkpoint_step"] == 1
