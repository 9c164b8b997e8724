"""A mixture of experts in training: which blocks are MoE blocks, ZeRO-3 leaf modules for them, and the
router's load-balancing loss (logged always, added to the loss when moe_aux_loss_coef asks)."""
from __future__ import annotations

from transformers import TrainerCallback

from .fsdp import DEEPSPEED

ROUTER_LOG_KEY = "router_aux_loss"  # its name in the logs and report.json's log_history


def moe_blocks(model) -> list[type]:
    """The classes of the model's mixture-of-experts blocks (a module holding `experts` and their router)."""
    return list({type(m) for m in model.modules() if hasattr(m, "experts") and hasattr(m, "gate")})


def make_moe_leaves(model, config) -> list[type]:
    """Under ZeRO-3, each MoE block becomes a leaf (moe_leaf_module): DeepSpeed gathers all of its
    parameters on entering it, instead of hooking each part, whose order changes with the routing."""
    blocks = moe_blocks(model)
    if blocks and config.moe_leaf_module and config.zero_stage == 3 and config.engine == DEEPSPEED:
        from deepspeed.utils import set_z3_leaf_modules

        set_z3_leaf_modules(model, blocks)
        return blocks
    return []


def routes_experts(model_config) -> bool:
    """A mixture of experts, whose router may send no token of a step to an expert: where the model's code
    keeps each expert a module of its own (Tencent's remote code), that expert gets no gradient (a dense
    Hunyuan's config may say num_experts: 1)."""
    return _largest(getattr(model_config, "num_experts", 0) or 0) > 1


def _largest(value) -> int:
    return max(value) if isinstance(value, list) else int(value)  # Tencent's configs give some per layer


class RouterLoss(TrainerCallback):
    """Switch Transformer's load-balancing loss over the routers' logits (transformers'
    load_balancing_loss_func), per micro-batch. With moe_aux_loss_coef it joins the loss, scaled so that
    the term is coef x its mean over the global batch's micro-batches (the Trainer sums micro-batch losses
    over accumulation and, averaging tokens across devices, multiplies them by the world size before the
    gradients are averaged). Logged as router_aux_loss: its mean since the last log, over every rank."""

    def __init__(self, model_config, coef: float | None, accumulation: int, world_size: int, across_devices: bool):
        self.num_experts = _largest(model_config.num_experts)
        self.top_k = _largest(model_config.moe_topk)
        self.coef = coef or 0.0
        self.scale = self.coef / (accumulation * (world_size if across_devices else 1))
        self._sum, self._count = 0.0, 0

    def __call__(self, outputs):
        """The term to add to this micro-batch's loss (0 without a coefficient)."""
        import torch
        from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

        logits = outputs.get("router_logits") if hasattr(outputs, "get") else None
        if not logits or not torch.is_grad_enabled():  # none recorded, or an evaluation
            return 0.0
        aux = load_balancing_loss_func(tuple(logits), self.num_experts, self.top_k)
        self._sum = self._sum + aux.detach().float()
        self._count += 1
        return aux * self.scale if self.coef else 0.0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs or not self._count:
            return
        import torch.distributed as dist

        mean = self._sum / self._count
        if dist.is_available() and dist.is_initialized():  # every rank logs at the same steps
            dist.all_reduce(mean)
            mean = mean / dist.get_world_size()
        logs[ROUTER_LOG_KEY] = state.log_history[-1][ROUTER_LOG_KEY] = round(float(mean), 6)
        self._sum, self._count = 0.0, 0
