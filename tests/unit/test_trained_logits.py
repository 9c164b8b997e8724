"""The LM head runs on the trained positions only (logits_to_keep from the collator): the loss and
every gradient equal those of full logits, for padded and packed batches, full and LoRA."""
from __future__ import annotations

import copy

import pytest

from hyft_trainer.batches import PaddingCollator, keeps_trained_logits, token_mean_loss, trained_positions
from hyft_trainer.chat_format import FAMILIES, Message
from hyft_trainer.encode import IGNORE, encode
from hyft_trainer.packing import pack
from hyft_trainer.sample_data import make_samples


def rows(tokenizer, packed: bool):
    samples = [encode(tokenizer, FAMILIES["small"], [Message(m["role"], m["content"]) for m in s["messages"]])
               for s in make_samples(6, seed=3)]
    if packed:
        return [pack(samples, [0, 1, 2]), pack(samples, [3, 4])]
    return [{"input_ids": ids, "labels": labels} for ids, labels in samples[:3]]


def test_trained_positions_are_those_before_a_target():
    import torch

    labels = torch.tensor([[IGNORE, IGNORE, 5, 6, IGNORE, 7], [IGNORE, 8, 9, IGNORE, IGNORE, IGNORE]])
    assert trained_positions(labels).tolist() == [[False, True, True, False, True, False],
                                                  [True, True, False, False, False, False]]


def test_only_transformers_own_models_are_handed_logits_to_keep(tiny_model):
    import torch

    class RemoteCode(torch.nn.Module):  # trust_remote_code: may slice logits_to_keep its own way
        def forward(self, input_ids, logits_to_keep=0):
            return input_ids

    assert keeps_trained_logits(tiny_model[1])
    assert not keeps_trained_logits(RemoteCode())


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_loss_and_gradients_equal_those_of_full_logits(tiny_model, packed, method):
    import torch
    from peft import LoraConfig, get_peft_model

    tokenizer, base = tiny_model
    model = copy.deepcopy(base)
    if method == "lora":
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    batch = PaddingCollator(tokenizer.pad_token_id, keep_trained_logits=True)(rows(tokenizer, packed))
    labels = batch.pop("labels")
    keep = batch.pop("logits_to_keep")
    assert 0 < keep.sum() < keep.numel()  # prompts are not trained: fewer logits

    def loss_and_grads(**extra):
        model.zero_grad()
        outputs = model(**batch, use_cache=False, **extra)
        loss = token_mean_loss(outputs, labels, num_items_in_batch=labels[:, 1:].ne(IGNORE).sum())
        loss.backward()
        return outputs.logits.shape, loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                                    if p.requires_grad}

    full_shape, full_loss, full_grads = loss_and_grads()
    kept_shape, kept_loss, kept_grads = loss_and_grads(logits_to_keep=keep)
    assert full_shape[:2] == labels.shape and kept_shape[0] == labels[:, 1:].ne(IGNORE).sum()
    torch.testing.assert_close(kept_loss, full_loss, rtol=1e-6, atol=1e-6)
    assert kept_grads.keys() == full_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(kept_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
