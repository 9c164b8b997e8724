"""Packing: bins respect the capacity, and a sample's loss inside a pack equals its
loss alone (no attention across samples)."""
from __future__ import annotations

import random

import pytest

from hyft_trainer.chat_format import FAMILIES, Message
from hyft_trainer.encode import IGNORE, encode
from hyft_trainer.packing import first_fit_decreasing, pack, packed_efficiency, padded_efficiency
from hyft_trainer.sample_data import make_samples


def test_first_fit_decreasing_fills_bins_within_capacity():
    rng = random.Random(0)
    lengths = [rng.randint(1, 100) for _ in range(500)]
    bins = first_fit_decreasing(lengths, 128)
    assert sorted(i for b in bins for i in b) == list(range(500))
    assert all(sum(lengths[i] for i in b) <= 128 for b in bins)
    assert len(bins) <= 1.25 * sum(lengths) / 128 + 1  # near the lower bound
    with pytest.raises(ValueError, match="sample 0 has 200 tokens > capacity 128"):
        first_fit_decreasing([200], 128)


def test_efficiency_figures():
    assert padded_efficiency([10, 10, 5, 5], 2) == 1.0
    assert padded_efficiency([10, 2], 2) == 12 / 20
    assert packed_efficiency([6, 4, 5, 5], 10) == 1.0


def test_each_sample_loss_in_a_pack_equals_its_loss_alone(tiny_model):
    import torch

    tokenizer, model = tiny_model
    model.eval()
    samples = [encode(tokenizer, FAMILIES["small"], [Message(m["role"], m["content"]) for m in s["messages"]])
               for s in make_samples(6, seed=5)]

    def per_token_loss(ids, labels, positions=None):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids]), use_cache=False,
                           position_ids=None if positions is None else torch.tensor([positions])).logits[0]
        return torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(labels[1:]), ignore_index=IGNORE,
                                                 reduction="none")

    packed = pack(samples, list(range(len(samples))))
    assert packed["position_ids"].count(0) == len(samples)
    in_pack = per_token_loss(packed["input_ids"], packed["labels"], packed["position_ids"])
    offset = 0
    for ids, labels in samples:
        alone = per_token_loss(ids, labels)
        torch.testing.assert_close(in_pack[offset:offset + len(ids) - 1], alone, atol=1e-5, rtol=1e-4)
        offset += len(ids)
    # the boundary term (last token of one sample predicting the next sample's first) is masked
    assert in_pack[len(samples[0][0]) - 1] == 0
