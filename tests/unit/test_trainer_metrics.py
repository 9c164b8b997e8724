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
    # model loading: the process start and the trainer's clock only (start-up timeouts read them)
    start = exported(metrics)
    assert set(start) == {"hyft_train_process_start_timestamp_seconds", "hyft_train_heartbeat_timestamp_seconds"}
    assert start["hyft_train_heartbeat_timestamp_seconds"] >= start["hyft_train_process_start_timestamp_seconds"]
    callback = MetricsCallback(metrics, global_batch=8)
    state = SimpleNamespace(max_steps=100, global_step=0, num_input_tokens_seen=0, epoch=0.0)
    callback.on_train_begin(None, state, None)
    assert {k: v for k, v in exported(metrics).items() if k not in start} == {
        "hyft_train_total_steps": 100, "hyft_train_global_step": 0, "hyft_train_overflow_skipped_steps": 0}

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


def test_the_operator_reads_what_the_trainer_exports():
    """Round trip through the contract: the trainer's exposition text, parsed by the operator's reader."""
    from hyft_operator.progress import parse_progress

    metrics = TrainingMetrics("job-a", 0)
    callback = MetricsCallback(metrics, global_batch=8)
    state = SimpleNamespace(max_steps=40, global_step=0, num_input_tokens_seen=0, epoch=0.0)
    callback.on_train_begin(None, state, None)
    state.global_step, state.num_input_tokens_seen = 10, 20480
    callback.on_step_end(None, state, None)
    callback.on_log(None, state, None, logs={"loss": 1.25})
    callback.on_save(None, state, None)
    progress = parse_progress(generate_latest(metrics.registry).decode())
    assert (progress.step, progress.totalSteps, progress.percent, progress.loss) == (10, 40, 25.0, 1.25)
    assert progress.lastCheckpointStep == 10 and progress.tokensPerSecond > 0 and progress.etaSeconds >= 0


def test_every_trainer_metric_the_chart_names_is_in_the_contract():
    """The dashboard and the alert rules read names the trainer exports (a histogram's too)."""
    import re
    from pathlib import Path

    from hyft_trainer.contract import STEP_DURATION, TRAINER_METRICS

    charts = Path(__file__).resolve().parents[2] / "charts"
    text = "".join(p.read_text() for p in charts.rglob("*") if p.suffix in (".json", ".yaml", ".tpl"))
    named = set(re.findall(r"hyft_train_[a-z_]+", text))
    histogram = {f"{STEP_DURATION}_{suffix}" for suffix in ("bucket", "count", "sum")}
    assert named and named <= set(TRAINER_METRICS) | histogram, named - set(TRAINER_METRICS) - histogram
    metrics = TrainingMetrics("job-a", 0)
    exported = {m.name for m in metrics.registry.collect()}
    assert exported == set(TRAINER_METRICS)


def test_every_gpu_of_a_node_is_exported_by_its_first_process(tmp_path):
    """Each local rank writes its peaks; the node's exporter (local rank 0) serves all of them, one series
    per local_rank, allocated and reserved; no GPU, no series."""
    from hyft_trainer.contract import PEAK_GPU_MEMORY, PEAK_GPU_RESERVED

    exporter = TrainingMetrics("job-a", 1, launch_dir=tmp_path, local_rank=0)
    assert not [s for f in exporter.registry.collect() for s in f.samples if s.name.startswith("hyft_train_peak_gpu")]
    for rank, (allocated, reserved) in enumerate([(10, 16), (11, 18), (12, 20)]):
        TrainingMetrics("job-a", 1, launch_dir=tmp_path, local_rank=rank).gpu_memory.record(allocated, reserved)
    text = generate_latest(exporter.registry).decode()
    series = {(s.name, s.labels["local_rank"]): s.value for f in text_string_to_metric_families(text)
              for s in f.samples if s.name in (PEAK_GPU_MEMORY, PEAK_GPU_RESERVED)}
    assert series == {(PEAK_GPU_MEMORY, "0"): 10, (PEAK_GPU_MEMORY, "1"): 11, (PEAK_GPU_MEMORY, "2"): 12,
                      (PEAK_GPU_RESERVED, "0"): 16, (PEAK_GPU_RESERVED, "1"): 18, (PEAK_GPU_RESERVED, "2"): 20}
    assert all(s.labels["node_rank"] == "1" for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == PEAK_GPU_MEMORY)


def test_mfu_is_tokens_per_second_times_a_tokens_share_of_the_peak():
    from hyft_trainer.choices import SIZES
    from hyft_trainer.estimate import Shape
    from hyft_trainer.flops import flops_per_token, mfu, peak_flops

    shape = Shape(**SIZES["7B"])
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and peak_flops("Tesla T4") is None
    assert flops_per_token(shape, 4096) == 6 * shape.params + 12 * shape.layers * shape.hidden * 4096
    # 8 H100s at 3,000 tokens/s each on 7B
    assert mfu(24_000, shape, 4096, 8, 989e12) == 24_000 * flops_per_token(shape, 4096) / (8 * 989e12)
    assert mfu(24_000, shape, 4096, 8, None) is None
    metrics = TrainingMetrics("job-a", 0)
    callback = MetricsCallback(metrics, global_batch=8, peak_flops_per_token=1e-6)
    state = SimpleNamespace(max_steps=10, global_step=0, num_input_tokens_seen=0, epoch=0.0)
    callback.on_train_begin(None, state, None)
    state.global_step, state.num_input_tokens_seen = 1, 4096
    callback.on_step_end(None, state, None)
    values = exported(metrics)
    assert values["hyft_train_mfu"] == values["hyft_train_tokens_per_second"] * 1e-6
    without = TrainingMetrics("job-a", 0)
    MetricsCallback(without, global_batch=8).on_train_begin(None, state, None)
    assert "hyft_train_mfu" not in exported(without)


def test_steps_fp16_loss_scaling_skips_on_an_overflow_are_counted():
    """The Trainer hands its callbacks accelerate's optimizer wrapper; with a loss scaler (torch's GradScaler
    here, on the CPU; DeepSpeed's fp16 engine alike) it says whether the step was skipped."""
    import torch
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer
    from accelerate.state import AcceleratorState

    Accelerator(cpu=True)
    try:
        weight = torch.nn.Parameter(torch.ones(4))
        optimizer = AcceleratedOptimizer(torch.optim.SGD([weight], lr=0.1), device_placement=False,
                                         scaler=torch.amp.GradScaler("cpu", init_scale=2.0**16))
        metrics = TrainingMetrics("job-a", 0)
        callback = MetricsCallback(metrics, global_batch=8)
        state = SimpleNamespace(max_steps=10, global_step=0, num_input_tokens_seen=0, epoch=0.0)
        callback.on_train_begin(None, state, None)
        for step, overflow in enumerate((False, True, False, True), 1):
            loss = (weight * (float("inf") if overflow else 1.0)).sum()
            optimizer.scaler.scale(loss).backward()
            optimizer.step()
            optimizer.zero_grad()
            state.global_step = step
            callback.on_step_end(None, state, None, optimizer=optimizer)
        assert callback.overflow_skipped_steps == 2
        assert exported(metrics)["hyft_train_overflow_skipped_steps"] == 2
        assert optimizer.scaler.get_scale() == 2.0**14  # halved at each overflow
    finally:
        AcceleratorState._reset_state(True)
