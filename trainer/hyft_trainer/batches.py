"""Batches and the loss on them: the collator (padding, packed rows' position ids, which positions
need logits) and the token-mean loss, as each training process uses them."""
from __future__ import annotations

import json

from .encode import IGNORE


def trained_positions(labels):
    """The positions whose logits the loss reads: position p predicts token p + 1, so p is kept
    when labels[p + 1] is a target. Prompts, padding and each row's last position are not."""
    import torch

    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:].ne(IGNORE)
    return keep


def keeps_trained_logits(model) -> bool:
    """transformers' own causal LMs take a boolean `logits_to_keep` (B, T) and project only those
    positions onto the vocabulary; remote-code models may slice it differently, so they get all."""
    import inspect

    return (type(model).__module__.startswith("transformers.")
            and "logits_to_keep" in inspect.signature(type(model).forward).parameters)


PAD_MULTIPLE = 8  # tensor cores take matrix sizes in multiples of 8


class PaddingCollator:
    """Pads to the longest in the batch, rounded up to a multiple of 8; packed rows carry position_ids
    and NO attention mask, so transformers builds a block-diagonal causal mask from the restarting
    positions (or varlen cuts them into documents). With documents (varlen) every row carries
    position ids, a pad its own one-token document, and no row a mask. With keep_trained_logits the
    batch says which positions need logits: the LM head (vocabulary x hidden, and its float32 copy
    for the loss) then runs on the target tokens only."""

    def __init__(self, pad_id: int, batch_log: str | None = None, keep_trained_logits: bool = False,
                 documents: bool = False):
        self.pad_id = pad_id
        self.batch_log = batch_log  # diagnostics: which samples this rank trained on
        self.keep_trained_logits = keep_trained_logits
        self.documents = documents

    def __call__(self, rows):
        import torch

        if self.batch_log:
            with open(self.batch_log, "a") as f:
                f.write(json.dumps([hash(tuple(r["input_ids"])) for r in rows]) + "\n")

        longest = -(-max(len(r["input_ids"]) for r in rows) // PAD_MULTIPLE) * PAD_MULTIPLE

        def padded(key, value):
            return torch.tensor([r[key] + [value] * (longest - len(r[key])) for r in rows])

        batch = {"input_ids": padded("input_ids", self.pad_id), "labels": padded("labels", IGNORE)}
        if "position_ids" in rows[0]:
            batch["position_ids"] = padded("position_ids", 0)
        elif self.documents:
            batch["position_ids"] = torch.tensor([list(range(len(r["input_ids"])))
                                                  + [0] * (longest - len(r["input_ids"])) for r in rows])
        else:
            batch["attention_mask"] = torch.tensor([[1] * len(r["input_ids"]) + [0] * (longest - len(r["input_ids"]))
                                                    for r in rows])
        if self.keep_trained_logits:
            batch["logits_to_keep"] = trained_positions(batch["labels"])
        return batch


def token_mean_loss(outputs, labels, num_items_in_batch=None, label_smoothing: float = 0.0, router=None):
    """Cross-entropy summed over this rank's target tokens, divided by the target tokens of the whole
    global batch (all ranks, all accumulation steps): every token weighs the same, however the batch
    is split, so N nodes train exactly like one process with the same global batch. router: a MoE's
    moe.RouterLoss, whose term joins the loss."""
    import torch

    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    targets = labels[..., 1:]
    if logits.dim() == 2:  # the trained positions' logits only (trained_positions), in the targets' order
        targets = targets[targets.ne(IGNORE)]
    else:
        logits = logits[..., :-1, :]
    targets = targets.reshape(-1).to(logits.device)
    total = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets,
                                              ignore_index=IGNORE, reduction="sum", label_smoothing=label_smoothing)
    loss = total / (targets.ne(IGNORE).sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
    return loss + router(outputs) if router is not None else loss
