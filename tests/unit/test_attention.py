"""Attention on packed rows without a T x T mask (hyft_trainer.attention): the choice, the documents,
and the varlen path's loss and gradients against transformers' dense block-diagonal mask."""
from __future__ import annotations

import copy

import pytest

from hyft_trainer import attention
from hyft_trainer.batches import PaddingCollator
from tests.unit.test_trained_logits import rows

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("setting, on_gpu, capability, half, chosen", [
    ("auto", True, (9, 0), True, "varlen"), ("auto", True, (8, 0), True, "varlen"),
    ("auto", True, (7, 0), True, "sdpa"), ("auto", True, (9, 0), False, "sdpa"), ("auto", False, None, False, "sdpa"),
    ("sdpa", True, (9, 0), True, "sdpa"), ("varlen", False, None, False, "varlen"),
])
def test_the_kernel_chosen(setting, on_gpu, capability, half, chosen):
    assert attention.choose(setting, on_gpu, capability, half, flash_attn_installed=False)[0] == chosen


@pytest.mark.parametrize("setting, on_gpu", [("flash_attention_2", True), ("flex_attention", False)])
def test_a_kernel_that_cannot_run_here_is_refused(setting, on_gpu):
    with pytest.raises(ValueError, match=setting):
        attention.choose(setting, on_gpu, (9, 0), True, flash_attn_installed=False)


def test_documents_start_where_positions_restart_and_at_every_row():
    import torch

    bounds, longest = attention.document_bounds(torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 0]]))
    assert bounds.tolist() == [0, 3, 5, 6, 10, 11, 12] and longest == 4


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "padded"])
def test_varlen_gives_the_loss_and_gradients_of_the_dense_mask(tiny_model, packed):
    import torch

    tokenizer, base = tiny_model
    attention.register()

    def loss_and_grads(kernel, documents):
        model = copy.deepcopy(base)
        model.config._attn_implementation = kernel
        model.train()
        batch = PaddingCollator(tokenizer.pad_token_id, documents=documents)(rows(tokenizer, packed))
        assert batch["input_ids"].shape[1] % 8 == 0 and ("attention_mask" in batch) == (not documents and not packed)
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    dense, varlen = loss_and_grads("sdpa", documents=False), loss_and_grads(attention.VARLEN, documents=True)
    assert varlen[0] == pytest.approx(dense[0], rel=1e-5)
    assert torch.allclose(varlen[1], dense[1], atol=1e-5, rtol=1e-4)
