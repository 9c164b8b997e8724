"""`hyft recipe`: a LLaMA-Factory YAML becomes a HunyuanFineTune whose trainer config carries every key of
the recipe: spec fields where the spec has them, the DeepSpeed JSON as stage, offloads and overrides,
the rest in spec.training.arguments."""
from __future__ import annotations

import json

import pytest
import yaml

from hyft_operator import api, builders
from hyft_operator.recipe import RecipeError, from_llamafactory
from hyft_trainer.config import parse_config, passed_arguments
from hyft_trainer.deepspeed_config import settle
from tests.llamafactory_corpus import CORPUS, DS_Z3_FP16, GUIDE_RECIPE, GUIDE_RECIPE_FSDP

PLACES = {"model_name_or_path", "dataset_dir", "output_dir", "deepspeed"}  # volume paths to complete


def convert(text, ds_json, tmp_path, **kw):
    (tmp_path / "ds.json").write_text(json.dumps(ds_json or {}))
    recipe = yaml.safe_load(text.format(model="tencent/Hunyuan-1.8B-Instruct", dataset_dir="/home/me/data",
                                        deepspeed="ds.json", output="saves/run"))
    body, notes = from_llamafactory(recipe, "from-recipe", base=tmp_path, **kw)
    body["metadata"]["namespace"] = "default"
    return recipe, api.HunyuanFineTune.model_validate(body), notes


@pytest.mark.parametrize("engine", ["deepspeed", "fsdp"])
def test_the_guide_recipe_becomes_a_resource_whose_config_carries_every_key(tmp_path, engine):
    recipe, job, notes = convert(GUIDE_RECIPE if engine == "deepspeed" else GUIDE_RECIPE_FSDP, DS_Z3_FP16, tmp_path)
    builders.check(job)
    config = parse_config(yaml.safe_load(builders.config_map(job)["data"]["train.yaml"]))
    read = parse_config({**recipe, "model_name_or_path": "/m", "dataset_dir": "/d", "output_dir": "/o",
                         **({"deepspeed": DS_Z3_FP16} if engine == "deepspeed" else {})})  # as `hyft train` reads it
    for key in read.model_fields_set - PLACES:
        assert getattr(config, key) == getattr(read, key), key
    assert passed_arguments(config) == passed_arguments(read)
    assert "logging_dir" in recipe and any(n.startswith("logging_dir: has no effect here") for n in config.notes)
    assert job.spec.model.path == "Hunyuan-1.8B-Instruct" and any("hub id" in n for n in notes)
    assert config.engine == job.spec.training.engine == engine
    if engine == "fsdp":
        assert config.deepspeed is None and config.fsdp_config == {  # full_shard: reshard_after_forward
            "reshard_after_forward": True, "version": 2, "transformer_layer_cls_to_wrap": "HunYuanDenseV1DecoderLayer"}
    else:
        ds = settle(config, world_size=8, on_gpu=True).deepspeed
        assert ds["fp16"]["loss_scale_window"] == 1000 and ds["zero_optimization"]["stage"] == 3


def test_a_recipe_asking_for_both_engines_is_refused(tmp_path):
    recipe = yaml.safe_load(GUIDE_RECIPE_FSDP.format(model="/m", dataset_dir="/d", output="o")) | {"deepspeed": "x"}
    with pytest.raises(RecipeError, match="deepspeed and fsdp: the recipe asks for both engines"):
        from_llamafactory(recipe, "x")


@pytest.mark.parametrize("name", CORPUS)
def test_every_corpus_recipe_converts_to_a_valid_resource(name, tmp_path):
    text, ds_json = CORPUS[name]
    _, job, _ = convert(text, ds_json, tmp_path)
    builders.check(job)
    assert job.spec.deepspeed.stage == (ds_json["zero_optimization"]["stage"] if ds_json else 0)


def test_without_a_deepspeed_json_it_is_plain_ddp_and_lora_targets_are_a_list(tmp_path):
    recipe = {"model_name_or_path": "/models/h", "dataset": "a,b", "finetuning_type": "lora",
              "lora_target": "q_proj, v_proj", "bf16": True}
    body, _ = from_llamafactory(recipe, "x")
    assert body["spec"]["deepspeed"] == {"stage": 0}
    assert body["spec"]["method"]["lora"]["targetModules"] == ["q_proj", "v_proj"]
    assert body["spec"]["data"]["names"] == ["a", "b"] and body["spec"]["data"]["datasetInfo"]["path"] == "data"
    with pytest.raises(RecipeError, match="stage: hyft trains supervised fine-tuning only"):
        from_llamafactory({**recipe, "stage": "dpo"}, "x")
