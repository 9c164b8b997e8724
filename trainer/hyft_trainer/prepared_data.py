"""The prepared data: validated, tokenized, split and packed once per job by global rank 0 into the
shared data cache (its key: the data settings of knobs.py and the sources), memory-mapped by every rank."""
from __future__ import annotations

from pathlib import Path

from .config import ConfigError, TrainerConfig
from .encode import MaskOptions
from .knobs import DATA, KNOBS
from .loading import DataError, sources_for_config
from .packing import first_fit_decreasing, pack


def prepare_data(config: TrainerConfig, tokenizer):
    """Validate, tokenize, split and pack (global rank 0, for every rank: build_datasets)."""
    from datasets import Dataset

    from .data_check import prepare

    opts = MaskOptions(config.train_on_prompt, config.mask_history, config.train_assistant_header)
    encoded, report = prepare(sources_for_config(config), tokenizer, config.template, config.cutoff_len,
                              opts=opts, num_proc=config.preprocessing_num_workers, max_samples=config.max_samples,
                              template_check_samples=config.template_check_samples,
                              default_system=config.default_system)
    if encoded is None or not encoded.num_rows:
        check_prepared(config, report, rows=0)
    if config.mix_strategy != "concat":
        encoded = interleaved(encoded, sources_for_config(config), config)
    encoded = encoded.select_columns(["input_ids", "labels"])
    eval_ds = None
    if config.val_size:
        count = config.val_size >= 1  # LLaMA-Factory: a whole number of samples
        split = encoded.train_test_split(test_size=int(config.val_size) if count else config.val_size,
                                         seed=config.seed)
        encoded, eval_ds = split["train"], split["test"]
    if config.packing:
        rows = encoded.to_dict()
        samples = list(zip(rows["input_ids"], rows["labels"], strict=True))
        packs = [pack(samples, g) for g in first_fit_decreasing([len(s[0]) for s in samples], config.cutoff_len)]
        encoded = Dataset.from_list(packs)
    return encoded, eval_ds, report


STOPPING = {"interleave_under": "first_exhausted", "interleave_over": "all_exhausted",
            "interleave_once": "all_exhausted_without_replacement"}  # LLaMA-Factory's meaning of each


def interleaved(encoded, sources, config: TrainerConfig):
    """The valid samples of each dataset (a dataset_info entry, or a data_files entry), interleaved as
    mix_strategy and interleave_probs say, by datasets' interleave_datasets (before the validation split,
    as LLaMA-Factory mixes)."""
    from datasets import interleave_datasets

    from .config import interleave_probs

    units = list(dict.fromkeys(s.dataset for s in sources))
    unit_of = {str(s.path): units.index(s.dataset) for s in sources}
    rows: list[list[int]] = [[] for _ in units]
    for i, file in enumerate(encoded["file"]):
        rows[unit_of[file]].append(i)
    if empty := [units[u] for u, r in enumerate(rows) if not r]:
        raise DataError(f"mix_strategy {config.mix_strategy}: no valid samples in {', '.join(empty)}")
    probs = interleave_probs(config.interleave_probs) if config.interleave_probs is not None else None
    if probs is not None and len(probs) != len(units):
        raise ConfigError(f"interleave_probs: {len(probs)} shares for {len(units)} datasets ({', '.join(units)})")
    return interleave_datasets([encoded.select(r) for r in rows], probabilities=probs, seed=config.seed,
                               stopping_strategy=STOPPING[config.mix_strategy])


def check_prepared(config: TrainerConfig, report, rows: int) -> None:
    """What stops training after preparation, the same on every rank."""
    if report.template_mismatch:
        raise ConfigError(report.template_mismatch)
    if report.failed and not config.skip_invalid_samples:
        raise DataError("invalid training data (set skip_invalid_samples to train without these):\n"
                        + report.render())
    if not rows:
        raise DataError("no valid training samples" + (":\n" + report.render() if report.failed else ""))


def data_cache_key(config: TrainerConfig) -> str:
    from . import data_cache

    settings = {k.key: getattr(config, k.key) for k in KNOBS if k.to == DATA}
    settings["seed"] = config.seed  # the validation split's
    sources = sources_for_config(config)
    settings["sources"] = [(str(s.path), s.format, s.name, s.dataset, repr(s.columns)) for s in sources]
    return data_cache.key([s.path for s in sources], Path(config.model_name_or_path), settings)


def build_datasets(config: TrainerConfig, tokenizer, state):
    """(train, eval, report, cache facts): prepared once per job by global rank 0 into the shared data cache,
    memory-mapped by every rank (data_cache)."""
    import torch.distributed as dist

    from . import data_cache

    key = [data_cache_key(config) if state.is_main_process else None]
    if state.num_processes > 1:
        dist.broadcast_object_list(key, src=0)
    folder = Path(config.data_cache_dir or Path(config.output_dir) / data_cache.FOLDER) / key[0]
    built = False
    if not data_cache.complete(folder):
        if state.is_main_process:
            print(f"hyft: preparing the data once for every rank into {folder}", flush=True)
            data_cache.clear_failure(folder)
            try:
                data_cache.save(folder, *prepare_data(config, tokenizer))
                built = True
            except (ConfigError, DataError) as err:
                data_cache.save_failure(folder, type(err).__name__, str(err))
        elif state.local_process_index == 0:
            print(f"hyft: waiting for global rank 0 to prepare the data into {folder} "
                  f"(at most ddp_timeout, {config.ddp_timeout}s)", flush=True)
        state.wait_for_everyone()
    if failed := data_cache.failure(folder):
        raise (ConfigError if failed["kind"] == "ConfigError" else DataError)(failed["message"])
    train_ds, eval_ds, report = data_cache.load(folder)
    if not built and state.local_process_index == 0:
        print(f"hyft: loaded the prepared data from {folder} ({train_ds.num_rows} rows; prepared earlier or by "
              "global rank 0)", flush=True)
    check_prepared(config, report, train_ds.num_rows)
    if report.failed and state.is_main_process:
        print(f"hyft: {report.skipped_summary()}", flush=True)
    return train_ds, eval_ds, report, {"folder": str(folder), "built_here": built}
