"""Several datasets mixed as LLaMA-Factory's mix_strategy and interleave_probs say."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from datasets import Dataset

from hyft_trainer.config import ConfigError, parse_config
from hyft_trainer.loading import DataError, Source
from hyft_trainer.prepared_data import interleaved

SOURCES = [Source(Path("a.jsonl"), dataset="a"), Source(Path("b1.jsonl"), dataset="b"),
           Source(Path("b2.jsonl"), dataset="b")]  # a folder's two files are one dataset


def encoded(a=10, b=30):
    files = ["a.jsonl"] * a + ["b1.jsonl", "b2.jsonl"] * (b // 2)
    return Dataset.from_dict({"file": files, "input_ids": [[i] for i in range(len(files))],
                              "labels": [[i] for i in range(len(files))]})


def mixed(strategy, probs=None, rows=None):
    config = parse_config({"model_name_or_path": "/m", "data_files": [{"path": "/d"}], "mix_strategy": strategy,
                           **({"interleave_probs": probs} if probs is not None else {})})
    out = interleaved(rows or encoded(), SOURCES, config)
    return Counter("a" if f == "a.jsonl" else "b" for f in out["file"]), out


def test_once_uses_every_sample_once_and_under_stops_with_the_first_dataset():
    counts, out = mixed("interleave_once", "0.5,0.5")
    assert counts == {"a": 10, "b": 30} and len(set(i[0] for i in out["input_ids"])) == 40
    counts, _ = mixed("interleave_under")  # equal turns until a runs out
    assert counts["a"] == 10 and counts["b"] in (9, 10)


def test_over_repeats_the_smaller_dataset_to_the_asked_shares():
    counts, _ = mixed("interleave_over", [0.5, 0.5])
    assert counts["b"] == 30 and counts["a"] >= 25  # a repeated until b is used up


@pytest.mark.parametrize("change, error, message", [
    ({"mix_strategy": "concat", "interleave_probs": "0.5,0.5"}, ConfigError, "interleave_probs needs an interleave"),
    ({"mix_strategy": "interleave_under", "interleave_probs": "0.7,0.7"}, ConfigError, "sum to 1"),
    ({"mix_strategy": "interleave_under", "interleave_probs": "a,b"}, ConfigError, "comma-separated numbers"),
])
def test_bad_mixing_settings_are_refused(change, error, message):
    with pytest.raises(error, match=message):
        parse_config({"model_name_or_path": "/m", "data_files": [{"path": "/d"}], **change})


def test_shares_for_another_number_of_datasets_and_an_empty_one_are_refused():
    with pytest.raises(ConfigError, match=r"interleave_probs: 3 shares for 2 datasets \(a, b\)"):
        mixed("interleave_under", "0.2,0.3,0.5")
    with pytest.raises(DataError, match="no valid samples in a"):
        mixed("interleave_under", rows=encoded(a=0))
