"""A mixture of experts' router loss: its term in the loss and what is logged."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

from hyft_trainer.moe import ROUTER_LOG_KEY, RouterLoss

CONFIG = SimpleNamespace(num_experts=[4, 4], moe_topk=2)  # Tencent's configs give some settings per layer


def outputs(seed):
    torch.manual_seed(seed)
    return {"router_logits": tuple(torch.randn(6, 4, requires_grad=True) for _ in range(2))}


def test_with_a_coefficient_the_term_is_its_share_of_the_global_batch_mean():
    router = RouterLoss(CONFIG, coef=0.01, accumulation=4, world_size=2, across_devices=True)
    out = outputs(0)
    term = router(out)
    aux = load_balancing_loss_func(out["router_logits"], 4, 2)
    # 4 micro-batches summed, x2 for the world size, then averaged over 2 ranks: coef x the mean
    assert term.item() == pytest.approx(0.01 * aux.item() / 8)
    term.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in out["router_logits"])
    per_device = RouterLoss(CONFIG, coef=0.01, accumulation=4, world_size=2, across_devices=False)
    assert per_device(out).item() == pytest.approx(0.01 * aux.item() / 4)


def test_without_a_coefficient_it_is_logged_not_trained_and_evaluation_is_left_out():
    router = RouterLoss(CONFIG, coef=None, accumulation=1, world_size=1, across_devices=True)
    values = [load_balancing_loss_func(outputs(s)["router_logits"], 4, 2).item() for s in (1, 2)]
    assert router(outputs(1)) == 0.0 and router(outputs(2)) == 0.0
    with torch.no_grad():
        router(outputs(3))  # an evaluation step: not counted
    assert router({"logits": torch.zeros(1)}) == 0.0  # a model that records no router logits
    state = SimpleNamespace(log_history=[{"loss": 1.0, "step": 2}])
    logs = {"loss": 1.0}
    router.on_log(None, state, None, logs=logs)
    assert logs[ROUTER_LOG_KEY] == state.log_history[-1][ROUTER_LOG_KEY] == pytest.approx(sum(values) / 2, abs=1e-6)
    logs = {"loss": 0.9}
    router.on_log(None, state, None, logs=logs)  # nothing since the last log
    assert ROUTER_LOG_KEY not in logs
