"""Each setting declared in knobs.py reaches what consumes it: set to a value other than its
default, it changes the TrainingArguments, the DeepSpeed JSON, the LoRA/freeze settings or the
prepared data; a setting read by hyft's own code is read by code (an attribute load, not text).
The spec and `hyft train` accept and refuse the same values for every setting they share."""
from __future__ import annotations

import ast
import functools
import math
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

import hyft_trainer
from hyft_operator import api
from hyft_operator.markers import Trainer
from hyft_trainer import knobs, loading, model_setup, offload, prepared_data, worker
from hyft_trainer.config import TrainerConfig, parse_config
from hyft_trainer.deepspeed_config import settle
from tests.knob_values import BASE, COMPANIONS, changed
from tests.llamafactory_corpus import CORPUS, render


def training_arguments(config, ds, on_gpu, experts=False):
    """The worker's, on a config resolved as a CPU node resolves it (offload and gradient checkpointing)."""
    return worker.training_arguments(offload.resolve(config, None, None, 1, 1, on_gpu=False)[0], ds, on_gpu,
                                     experts)



def configs(knob: knobs.Knob):
    base = {**BASE, **COMPANIONS.get(knob.key, {})}
    return TrainerConfig(**base), TrainerConfig(**{**base, knob.key: changed(knob)})


def of(to: str) -> list[knobs.Knob]:
    return [k for k in knobs.KNOBS if k.to == to]


@pytest.fixture
def accelerate_state(monkeypatch):
    """TrainingArguments take the process state as the worker configures it (use_configured_state),
    on the CPU (where transformers refuses bf16 unless told use_cpu)."""
    import transformers
    from accelerate import PartialState

    monkeypatch.setattr(transformers, "TrainingArguments", functools.partial(transformers.TrainingArguments,
                                                                             use_cpu=True))
    yield PartialState(cpu=True)
    PartialState._reset_state()


@pytest.mark.parametrize("knob", of(knobs.ARGS), ids=lambda k: k.key)
def test_a_training_argument_reaches_the_training_arguments(knob, accelerate_state):
    before, after = (training_arguments(c, None, on_gpu=False) for c in configs(knob))
    name = knob.arg or knob.key
    assert getattr(after, name) != getattr(before, name)


@pytest.mark.parametrize("knob", of(knobs.DEEPSPEED), ids=lambda k: k.key)
def test_a_deepspeed_setting_changes_the_deepspeed_json(knob):
    resolved = (offload.resolve(c, None, None, nodes=1, per_node=1, on_gpu=False)[0] for c in configs(knob))
    before, after = (settle(c, world_size=1, on_gpu=False).deepspeed for c in resolved)
    assert after != before


@pytest.mark.parametrize("knob", of(knobs.METHOD), ids=lambda k: k.key)
def test_a_method_setting_changes_the_lora_or_freeze_settings(knob):
    before, after = (model_setup.method_settings(c, layers=8) for c in configs(knob))
    assert after != before


@pytest.mark.parametrize("knob", of(knobs.DATA), ids=lambda k: k.key)
def test_a_data_setting_changes_the_prepared_data(knob, monkeypatch):
    """What the data pipeline is called with, and the rows that come out (split, packed)."""
    from datasets import Dataset

    from hyft_trainer import data_check

    rows = [{"input_ids": list(range(n)), "labels": list(range(n)), "file": f"{n % 20}.jsonl"}
            for n in (20, 40, 30, 50)]  # two datasets, one after the other: mixing changes the order
    sources = [loading.Source(Path(f"{k}.jsonl"), dataset=str(k)) for k in (0, 10)]

    def prepare(*args, **kwargs):
        calls.append((args[1:], kwargs))
        return Dataset.from_list(rows), data_check.Report(samples=len(rows))

    monkeypatch.setattr(data_check, "prepare", prepare)
    monkeypatch.setattr(prepared_data, "sources_for_config", lambda config: sources)
    seen = []
    for config in configs(knob):
        calls = []
        train, evaluation, _ = prepared_data.prepare_data(config, tokenizer=None)
        seen.append((calls, train.to_list(), evaluation and evaluation.to_list()))
    assert seen[0] != seen[1]


def _attribute_loads(folder: Path, skip: set[str]) -> set[str]:
    names = set()
    for path in folder.glob("*.py"):
        if path.name not in skip:
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                    names.add(node.attr)
    return names


@pytest.mark.parametrize("knob", of(knobs.HYFT), ids=lambda k: k.key)
def test_a_setting_for_hyft_itself_is_read_by_its_code(knob):
    read = _attribute_loads(Path(hyft_trainer.__file__).parent, skip={"knobs.py", "config.py"})
    assert knob.key in read, f"{knob.key}: declared for hyft's own code, which never reads config.{knob.key}"


def _trainer_fields(model: type[BaseModel], prefix: str = "spec"):
    """(spec path, spec FieldInfo, trainer key) of every spec field passed to the trainer unchanged."""
    for name, info in model.model_fields.items():
        key = next((m.key for m in info.metadata if isinstance(m, Trainer)), None)
        if key:
            yield f"{prefix}.{name}", info, key
        elif isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            yield from _trainer_fields(info.annotation, f"{prefix}.{name}")


SHARED = list(_trainer_fields(api.HunyuanFineTuneSpec))
PROBES = [None, True, "x", -(2**40), -1025, -1, -0.5, 0, 0.0, 0.5, 1, 1.0, 1.5, 2, 3, 10, 15, 16, 100, 1024, 1025, 4096,
          4097, 1e6, 1e9, 2**32, 2**40, math.inf, [], ["a"], ["a"] * 33, {}, {"a": 1}, "lora", "cosine", "auto"]


def _accepts(info, value) -> bool:
    try:
        TypeAdapter(typing.Annotated[(info.annotation, info)]).validate_python(value)
    except ValidationError:
        return False
    return True


def test_every_spec_field_given_to_the_trainer_is_a_declared_setting():
    assert {key for _, _, key in SHARED} == {k.key for k in knobs.KNOBS if k.spec}


def _given(value, trainer_field):
    """What the trainer gets for a spec value: an unset (null) field is the trainer's default (builders._marked)."""
    return trainer_field.get_default(call_default_factory=True) if value is None else value


@pytest.mark.parametrize("path, spec_field, key", SHARED, ids=[p for p, _, _ in SHARED])
def test_the_spec_and_hyft_train_accept_the_same_values(path, spec_field, key):
    trainer_field = TrainerConfig.model_fields[key]
    differ = [v for v in PROBES if _accepts(spec_field, v) and not _accepts(trainer_field, _given(v, trainer_field))]
    if knobs.BY_KEY[key].spec_type is None:  # the same type on both: the same values
        differ += [v for v in PROBES if _accepts(trainer_field, v) and not _accepts(spec_field, v)]
    assert not differ, f"{path} and {key} disagree on {differ}"
    assert _given(spec_field.get_default(call_default_factory=True), trainer_field) == \
        trainer_field.get_default(call_default_factory=True)


@pytest.mark.parametrize("name", ["hunyuan_full"])
def test_a_llamafactory_yaml_without_the_key_trains_with_gradient_checkpointing_as_llamafactory_does(name):
    text, _ = CORPUS[name]
    assert "gradient_checkpointing" not in text
    config = parse_config(render(text, model="/m", dataset_dir="/d", deepspeed="/ds.json", output="/o"))
    assert config.gradient_checkpointing
    assert not parse_config({**BASE, "disable_gradient_checkpointing": True}).gradient_checkpointing
