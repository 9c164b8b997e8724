"""Real training on CPU: tiny Hunyuan models, DeepSpeed ZeRO-3 with optimizer and
parameter offload, two launcher processes as two "nodes" (NNODES=2, NODE_RANK=0/1,
MASTER_ADDR=127.0.0.1). Every multi-process run has an outer timeout."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from hyft_trainer.contract import PLANNED_NODES_ENV
from hyft_trainer.estimate import stage_name
from hyft_trainer.launcher import free_port
from hyft_trainer.preflight import MARKER_DIR
from hyft_trainer.sample_data import make_samples
from hyft_trainer.worker import MODEL_LOADING

RUN_TIMEOUT = 600



@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from hyft_trainer.tiny import build

    return build(tmp_path_factory.mktemp("models") / "tiny-small", "small")


@pytest.fixture(scope="module")
def memorisable(tmp_path_factory):
    """Eight short chats: a tiny model can learn them by heart."""
    path = tmp_path_factory.mktemp("data") / "memo.jsonl"
    path.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in make_samples(8, seed=21)))
    return path


def subdir(parent, name):
    path = parent / name
    path.mkdir()
    return path


def write_config(tmp_path, tiny, data, **overrides):
    config = {
        "model_name_or_path": str(tiny), "data_files": [{"path": str(data)}], "cutoff_len": 256,
        "finetuning_type": "lora", "lora_rank": 8, "max_steps": 20, "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 1, "learning_rate": 5e-3, "lr_scheduler_type": "constant",
        "logging_steps": 1, "save_steps": 1000, "output_dir": str(tmp_path / "out"), "zero_stage": 3,
        "offload_optimizer": True, "offload_param": True, "metrics_port": None, "seed": 7,
    }
    config.update(overrides)
    path = tmp_path / f"train-{len(list(tmp_path.glob('train-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def launch(config, nodes, tmp_path, port=None, extra_env=None, env=None, wrapper=(), cwd=None):
    port = port or free_port()
    return [launch_node(config, rank, nodes, port, tmp_path, extra_env, wrapper, env, cwd) for rank in range(nodes)]


def launch_node(config, rank, nodes, port, tmp_path, extra_env=None, wrapper=(), base_env=None, cwd=None):
    """One node's `hyft train`; wrapper: a command to run it under (a namespace of its own)."""
    env = {**(os.environ if base_env is None else base_env), "NNODES": str(nodes), "NODE_RANK": str(rank),
           "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "NPROC_PER_NODE": "1",
           "HF_DATASETS_CACHE": str(tmp_path / f"hf-cache-{rank}"),  # each pod has its own
           "HYFT_BATCH_LOG": str(tmp_path / f"batches-{nodes}n"), **(extra_env or {})}
    if base_env is None:  # one intra-op thread: float reductions then do not depend on the machine's load
        env["OMP_NUM_THREADS"] = "1"
    log = open(tmp_path / f"node{rank}-{port}.log", "w")
    return (subprocess.Popen([*wrapper, sys.executable, "-m", "hyft_trainer.cli", "train", str(config)],
                             env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd), log)


def wait(procs, timeout=RUN_TIMEOUT):
    deadline = time.monotonic() + timeout
    codes = []
    try:
        for proc, log in procs:
            codes.append(proc.wait(max(1, deadline - time.monotonic())))
            log.close()
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
    return codes


def logs(tmp_path):
    return "\n".join(p.read_text() for p in sorted(tmp_path.glob("node*.log")))


def run(config, nodes, tmp_path, **kw):
    codes = wait(launch(config, nodes, tmp_path, **kw))
    assert codes == [0] * nodes, logs(tmp_path)[-5000:]
    output = Path(kw.get("cwd") or ".") / yaml.safe_load(config.read_text())["output_dir"]
    return json.loads((output / "report.json").read_text())


def falls(curve, by=0.4):
    """The mean of the last five losses is clearly (in nats) below the first five's."""
    return sum(curve[-5:]) / 5 < sum(curve[:5]) / 5 - by


def losses(report):
    return [h["loss"] for h in report["log_history"] if "loss" in h]


def test_two_nodes_lora_zero3_offload_learns_and_ranks_see_different_data(tiny, memorisable, tmp_path):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    config = write_config(tmp_path, tiny, memorisable, max_steps=80, learning_rate=1e-2, merge_lora=True)
    report = run(config, 2, tmp_path)
    curve = losses(report)
    assert report["world_size"] == 2 and report["steps"] == 80
    assert report["logits"] == "trained positions"  # the LM head skipped prompts and padding
    assert report["overflow_skipped_steps"] == 0  # fp32: no loss scaling, nothing skipped
    assert falls(curve), curve

    rank0, rank1 = ([tuple(json.loads(line)) for line in (tmp_path / f"batches-2n.rank{r}").read_text().splitlines()]
                    for r in (0, 1))
    assert len(rank0) == len(rank1) == 80
    assert all(a != b for a, b in zip(rank0, rank1, strict=True)), "both ranks got the same batch in a step"
    per_epoch = 8 // 2  # 8 samples, batch 1 per rank: each epoch splits them between the ranks
    for start in range(0, 80, per_epoch):
        epoch0, epoch1 = set(rank0[start:start + per_epoch]), set(rank1[start:start + per_epoch])
        assert epoch0.isdisjoint(epoch1) and len(epoch0 | epoch1) == 8, "ranks overlap within an epoch"

    export = tmp_path / "out" / "export"
    base = AutoModelForCausalLM.from_pretrained(tiny)
    original = load_file(tiny / "model.safetensors")
    model = PeftModel.from_pretrained(base, export)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "LoRA weights did not change (B starts at zero)"
    base_after = model.unload().state_dict()  # the base model without the adapter layers
    for name, tensor in original.items():  # the frozen base is untouched
        torch.testing.assert_close(base_after[name], tensor)
    assert (tmp_path / "out" / "loss.png").stat().st_size > 1000
    assert (export / "hyft_config.yaml").exists() and (export / "tokenizer.json").exists()
    assert_merged_export(tmp_path / "out", tiny)


def assert_merged_export(out, tiny):
    """merge_lora: a 16-bit model folder that reloads, generates and computes base+adapter's logits; the
    whole output folder readable by any uid (safetensors writes its files 0600)."""
    import stat

    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = out / "merged"
    report = json.loads((out / "report.json").read_text())  # rewritten by the merge
    assert report["exported"] == {"adapter": str(out / "export"), "merged": str(merged)}
    assert {"config.json", "generation_config.json", "tokenizer.json", "model.safetensors"} <= {
        p.name for p in merged.iterdir()}
    assert AutoTokenizer.from_pretrained(merged).chat_template == AutoTokenizer.from_pretrained(tiny).chat_template
    weights = load_file(merged / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.bfloat16} and not any("lora" in n for n in weights)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), out / "export")
    ids = torch.tensor([list(range(3, 40))])
    with torch.no_grad():
        got, want = model(ids).logits, reference(ids).logits
    base = AutoModelForCausalLM.from_pretrained(tiny)(ids).logits.detach()
    assert (want - base).abs().max() > 0.1  # the adapter changes the logits, and the merge keeps that change
    torch.testing.assert_close(got, want, rtol=0, atol=0.05)  # bf16 weights: within their rounding
    assert model.generate(ids[:, :5], max_new_tokens=4, do_sample=False).shape == (1, 9)
    for path in [out, *out.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode):
            want_bits = 0o755 if stat.S_ISDIR(mode) else 0o644
            assert mode & want_bits == want_bits, f"{path}: {oct(mode)}"


def qlora_run(tiny, data, tmp_path, name, **engine):
    """Two nodes train LoRA on the tiny model's base quantized by bitsandbytes: bitsandbytes' layers replace
    q, k, v, o, gate, up and down in every decoder layer, and the loss falls."""
    config = write_config(subdir(tmp_path, name), tiny, data, max_steps=30, learning_rate=1e-2,
                          output_dir=str(tmp_path / name / "out"), **engine)
    report = run(config, 2, tmp_path / name)
    layers = json.loads((tiny / "config.json").read_text())["num_hidden_layers"]
    assert report["quantization"] == {"method": "bnb", "bits": engine["quantization_bit"], "layers": 7 * layers}
    assert falls(losses(report)), losses(report)
    return losses(report)


def test_two_nodes_qlora_4bit_under_zero3_offload_follows_zero2_and_merges_onto_the_16bit_base(
        tiny, memorisable, tmp_path):
    """ZeRO-3 partitions the 4-bit weights (stored in the training dtype) and gathers them intact: the
    curve is ZeRO-2's. The adapter reloads on the 16-bit base, and merge_lora merges it there."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    zero2 = qlora_run(tiny, memorisable, tmp_path, "zero2", quantization_bit=4, zero_stage=2, offload_param=False)
    zero3 = qlora_run(tiny, memorisable, tmp_path, "zero3", quantization_bit=4, merge_lora=True)
    for step, (a, b) in enumerate(zip(zero2, zero3, strict=True), 1):
        assert abs(a - b) <= 1e-4 * abs(a), f"step {step}: ZeRO-2 {a} vs ZeRO-3 {b}"
    out = tmp_path / "zero3" / "out"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), out / "export")
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    assert_merged_export(out, tiny)


def test_two_nodes_qlora_8bit_trains_under_plain_ddp(tiny, memorisable, tmp_path):
    qlora_run(tiny, memorisable, tmp_path, "ddp", quantization_bit=8, zero_stage=0, offload_optimizer=False,
              offload_param=False)


def test_two_nodes_full_finetuning_exports_16bit_weights_that_reload(tiny, memorisable, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    config = write_config(tmp_path, tiny, memorisable, finetuning_type="full", learning_rate=1e-3, max_steps=20)
    report = run(config, 2, tmp_path)
    curve = losses(report)
    assert falls(curve), curve
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "export")
    original = load_file(tiny / "model.safetensors")
    changed = [n for n, p in model.state_dict().items() if n in original and not torch.equal(p, original[n])]
    assert changed, "full fine-tuning changed no weight"
    assert report["preflight_seconds"] > 0  # the node checks and the gang check passed
    timeline = report["timeline"]  # one point per logged step, in order, tokens from both ranks
    assert [p["step"] for p in timeline] == list(range(1, 21))
    assert all(a["seconds"] < b["seconds"] and a["tokens"] < b["tokens"] for a, b in zip(timeline, timeline[1:],
                                                                                         strict=False))
    assert timeline[-1]["tokens"] == report["tokens"]
    assert not list((tmp_path / "out" / MARKER_DIR).iterdir())  # rank 0 removed its shared-volume marker


@pytest.fixture(scope="module")
def tiny_a13b(tmp_path_factory):
    from hyft_trainer.tiny import build

    return build(tmp_path_factory.mktemp("models") / "tiny-a13b", "a13b")


@pytest.mark.parametrize("method", [{"finetuning_type": "lora", "learning_rate": 1e-2},
                                    {"finetuning_type": "lora", "learning_rate": 1e-2, "lora_target": "q_proj,experts"},
                                    {"finetuning_type": "full", "learning_rate": 1e-3}],
                         ids=["lora", "lora-experts", "full"])
def test_two_nodes_train_the_tiny_a13b_moe_under_zero3_offload(tiny_a13b, memorisable, tmp_path, method):
    """Hunyuan-A13B's mixture of experts: its own chat template found from the model, each MoE block a
    ZeRO-3 leaf, LoRA on the attention projections (Tencent's default), the loss falling."""
    config = write_config(tmp_path, tiny_a13b, memorisable, max_steps=40, **method)
    report = run(config, 2, tmp_path)
    assert falls(losses(report)), losses(report)
    router = [h["router_aux_loss"] for h in report["log_history"] if "loss" in h]  # every logged step
    assert len(router) == 40 and all(v > 0 for v in router) and report["router_aux_loss"] == router[-1]
    log = logs(tmp_path)
    assert log.count("hyft: ZeRO-3 leaf modules (moe_leaf_module): HunYuanMoEV1Moe") == 2  # once per node
    assert "match the model's chat_template token for token" in report["data"]["chat_template_check"]
    if method["finetuning_type"] == "lora":
        adapter = json.loads((tmp_path / "out" / "export" / "adapter_config.json").read_text())
        if "lora_target" in method:  # the experts' own 3-D weights, through peft's target_parameters
            assert adapter["target_modules"] == ["q_proj"]
            assert sorted(adapter["target_parameters"]) == ["experts.down_proj", "experts.gate_up_proj"]
            from safetensors.torch import load_file

            weights = load_file(tmp_path / "out" / "export" / "adapter_model.safetensors")
            experts_b = [w for name, w in weights.items() if "experts" in name and "lora_B" in name]
            assert len(experts_b) == 4 and all(w.abs().sum() > 0 for w in experts_b)  # B starts at zero: trained
        else:
            assert sorted(adapter["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]


def test_tencents_a13b_train_sh_as_a_hyft_config_trains(tiny_a13b, memorisable, tmp_path):
    """The arguments of Tencent's A13B train.sh (tests/corpus/a13b_train_sh.yaml) with its DeepSpeed JSON,
    on the tiny A13B: the LR schedule ends at its floor, and the run saves and exports as asked."""
    from tests.llamafactory_corpus import TENCENT

    text = (TENCENT.parent / "a13b_train_sh.yaml").read_text()
    config = tmp_path / "train_sh.yaml"
    config.write_text(text.format(model=tiny_a13b, data=memorisable, deepspeed=TENCENT / "ds_zero3_offload.json",
                                  output=tmp_path / "out").replace("max_steps: 200", "max_steps: 12")
                      .replace("save_steps: 100", "save_steps: 6").replace("cutoff_len: 4096", "cutoff_len: 512"))
    report = run(config, 1, tmp_path)
    rates = [h["learning_rate"] for h in report["log_history"] if "learning_rate" in h]
    assert report["steps"] == 12 and rates[-1] == pytest.approx(1e-6, rel=0.2) and max(rates) <= 1e-5
    assert (tmp_path / "out" / "checkpoint-6" / "COMPLETE").exists()
    assert json.loads((tmp_path / "out" / "export" / "adapter_config.json").read_text())["r"] == 64


def test_tool_calling_data_trains_the_a13b_checked_against_tencents_template(tiny_a13b, tmp_path):
    """OpenAI-style tool conversations on the tiny A13B whose tokenizer carries Tencent's own published
    chat template: the start-up check renders tool samples with it (the sample's pinned date) and finds
    hyft's ids equal token for token; training runs."""
    from tests.official_templates import OFFICIAL
    from tests.unit.test_tool_calls import CORPUS

    model = tmp_path / "a13b-official-template"
    shutil.copytree(tiny_a13b, model)
    (model / "chat_template.jinja").write_text(OFFICIAL["a13b"])
    data = tmp_path / "tools.jsonl"
    data.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in CORPUS * 2))
    config = write_config(tmp_path, model, data, max_steps=6, zero_stage=0, offload_optimizer=False, cutoff_len=2048,
                          offload_param=False)
    report = run(config, 1, tmp_path)
    assert report["data"]["valid"] == len(CORPUS) * 2 and report["steps"] == 6
    assert "conversations match the model's chat_template token for token" in report["data"]["chat_template_check"]
    assert all(h["loss"] > 0 for h in report["log_history"] if "loss" in h)


@pytest.mark.parametrize("engine", [
    {"zero_stage": 3, "offload_optimizer": True, "offload_param": True},
    # plain DDP, no DeepSpeed, recomputing as LLaMA-Factory does by default (reentrant checkpoints: a LoRA
    # weight's gradient hook fires in the recomputation too, which DDP's search for unused parameters refuses)
    {"zero_stage": 0, "offload_optimizer": False, "offload_param": False, "gradient_checkpointing": True,
     "use_reentrant_gc": True},
], ids=["zero3-offload", "ddp-reentrant-recomputation"])
def test_two_nodes_match_one_process_with_the_same_global_batch(tiny, memorisable, tmp_path, engine):
    one = write_config(subdir(tmp_path, "one"), tiny, memorisable, per_device_train_batch_size=2,
                       output_dir=str(tmp_path / "one" / "out"), **engine)
    two = write_config(subdir(tmp_path, "two"), tiny, memorisable, per_device_train_batch_size=1,
                       output_dir=str(tmp_path / "two" / "out"), **engine)
    single = losses(run(one, 1, tmp_path / "one"))
    double = losses(run(two, 2, tmp_path / "two"))
    assert len(single) == len(double) == 20
    for step, (a, b) in enumerate(zip(single, double, strict=True), 1):
        assert abs(a - b) <= 1e-4 * abs(a), f"step {step}: 1 process {a} vs 2 nodes {b}"


@pytest.fixture(scope="module")
def twelve(tmp_path_factory):
    """Twelve chats: whole global batches of 6 on 1, 2 or 3 ranks."""
    path = tmp_path_factory.mktemp("data") / "twelve.jsonl"
    path.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in make_samples(12, seed=22)))
    return path


@pytest.mark.parametrize("method", [{"finetuning_type": "lora", "learning_rate": 1e-2},
                                    {"finetuning_type": "full", "learning_rate": 1e-3}], ids=["lora", "full"])
def test_a_checkpoint_of_two_ranks_resumes_on_one_and_on_three_on_the_same_curve(tiny, twelve, tmp_path, method):
    """ZeRO-3 (offload) shards of 2 ranks, resumed on 1 and on 3 through DeepSpeed's universal checkpoint with
    the global batch of 6 kept (gradient accumulation 3 -> 6, 3 -> 2): the steps after the resume match the
    uninterrupted 2-rank run within the 2-nodes-vs-1-process tolerance; the data order continues. A 2-node job
    started on 1 node (runPolicy.resize) follows the same curve from its first step."""
    base = {"max_steps": 8, "gradient_accumulation_steps": 3, **method}
    whole = write_config(subdir(tmp_path, "two"), tiny, twelve, save_steps=4, output_dir=str(tmp_path / "two" / "out"),
                         **base)
    curve = losses(run(whole, 2, tmp_path / "two"))
    for world, accumulation in ((1, 6), (3, 2)):
        folder = subdir(tmp_path, f"on-{world}")
        shutil.copytree(tmp_path / "two" / "out" / "checkpoint-4", folder / "out" / "checkpoint-4")
        config = write_config(folder, tiny, twelve, save_steps=1000, output_dir=str(folder / "out"), **base)
        report = run(config, world, folder)
        assert report["resumed_from_world_size"] == 2 and report["resumed_from"].endswith("checkpoint-4")
        assert f"gradient_accumulation_steps 3 -> {accumulation} keeps the global batch of 6" in logs(folder)
        assert (folder / "out" / "checkpoint-4" / "COMPLETE_UNIVERSAL").exists()
        resumed = losses(report)
        assert len(resumed) == 8
        for step, (a, b) in enumerate(zip(curve[4:], resumed[4:], strict=True), 5):
            assert abs(a - b) <= 1e-4 * abs(a), f"{world} ranks, step {step}: {b} vs the 2-rank run's {a}"
    # The operator's runPolicy.resize started the 2-node job on 1 node: it keeps the planned global batch.
    folder = subdir(tmp_path, "shrunk")
    config = write_config(folder, tiny, twelve, save_steps=1000, output_dir=str(folder / "out"), **base)
    shrunk = losses(run(config, 1, folder, extra_env={PLANNED_NODES_ENV: "2"}))
    assert "running on 1 of the 2 ranks the job plans: gradient_accumulation_steps 3 -> 6" in logs(folder)
    for step, (a, b) in enumerate(zip(curve, shrunk, strict=True), 1):
        assert abs(a - b) <= 1e-4 * abs(a), f"shrunk to 1 rank, step {step}: {b} vs the 2-rank run's {a}"


def test_zero_stage_auto_resumes_under_the_checkpoints_stage_and_another_stage_is_refused(tiny, twelve, tmp_path):
    """DeepSpeed resumes a checkpoint under its own stage only, and plain DDP its own, so each checkpoint
    records it: zero_stage auto (which would choose plain DDP here) resumes a ZeRO-2 checkpoint of 2 ranks under
    ZeRO-2 on 1 rank through DeepSpeed's universal checkpoint (ZeRO-2 shards of the Trainer lack the state
    Megatron writes: injected) and follows the uninterrupted run, and a plain DDP one of 2 ranks on 1 as it is;
    zero_stage 3 set against the ZeRO-2 checkpoint is refused before loading, naming both stages. (ZeRO-3
    shards on another world size: test_a_checkpoint_of_two_ranks_resumes_on_one_and_on_three_on_the_same_curve;
    a stage read from an older checkpoint's file names: tests/unit/test_resize.py.)"""
    base = {"max_steps": 8, "gradient_accumulation_steps": 3, "finetuning_type": "lora", "learning_rate": 1e-2,
            "offload_param": "auto", "offload_optimizer": "auto"}
    curves, saved = {}, {}
    for stage in (2, 0):
        folder = subdir(tmp_path, f"zero{stage}")
        whole = write_config(folder, tiny, twelve, save_steps=4, zero_stage=stage, output_dir=str(folder / "out"),
                             **base)
        curves[stage] = losses(run(whole, 2, folder))
        saved[stage] = folder / "out" / "checkpoint-4"
        assert json.loads((saved[stage] / "hyft_checkpoint.json").read_text())["zero_stage"] == stage
    for stage, world in ((2, 1), (0, 1)):
        folder = subdir(tmp_path, f"auto-from-zero{stage}-on-{world}")
        shutil.copytree(saved[stage], folder / "out" / "checkpoint-4")
        config = write_config(folder, tiny, twelve, save_steps=1000, zero_stage="auto",
                              output_dir=str(folder / "out"), **base)
        report = run(config, world, folder)
        assert report["offload"]["zero_stage"] == stage, report["offload"]
        assert f"{stage_name(stage)}, the stage checkpoint-4 was written under" in logs(folder)
        resumed = losses(report)
        assert len(resumed) == 8
        for step, (a, b) in enumerate(zip(curves[stage][4:], resumed[4:], strict=True), 5):
            assert abs(a - b) <= 1e-4 * abs(a), f"{stage_name(stage)} on {world}, step {step}: {b} vs {a}"
    folder = subdir(tmp_path, "zero3-from-zero2")
    shutil.copytree(saved[2], folder / "out" / "checkpoint-4")
    config = write_config(folder, tiny, twelve, save_steps=1000, zero_stage=3, output_dir=str(folder / "out"), **base)
    assert wait(launch(config, 2, folder), timeout=300) == [2, 2]
    assert "checkpoint-4 was written under ZeRO-2 and cannot be resumed under ZeRO-3" in logs(folder)
    assert "Traceback" not in logs(folder)


@pytest.mark.parametrize("method", [{"finetuning_type": "lora", "learning_rate": 1e-2},
                                    {"finetuning_type": "full", "learning_rate": 1e-3}], ids=["lora", "full"])
def test_fsdp2_follows_zero3_and_its_checkpoint_resumes_on_one_rank(tiny, twelve, tmp_path, method):
    """engine fsdp on 2 ranks (torch's fully_shard over gloo, the decoder layer as the unit, FSDP's activation
    checkpointing) follows the ZeRO-3 run of the same settings within the 2-nodes-vs-1-process tolerance; its
    sharded checkpoint (torch's distributed checkpoint) resumes on 1 rank, the global batch kept, on the same
    curve; the export reloads."""
    base = {"max_steps": 8, "gradient_accumulation_steps": 3, "offload_optimizer": False, "offload_param": False,
            **method}
    zero3 = write_config(subdir(tmp_path, "zero3"), tiny, twelve, output_dir=str(tmp_path / "zero3" / "out"), **base)
    reference = losses(run(zero3, 2, tmp_path / "zero3"))
    sharded = write_config(subdir(tmp_path, "fsdp"), tiny, twelve, save_steps=4, engine="fsdp",
                           output_dir=str(tmp_path / "fsdp" / "out"), **base)
    report = run(sharded, 2, tmp_path / "fsdp")
    assert report["engine"] == "fsdp2"  # the model was wrapped by fully_shard, not DDP
    curve = losses(report)
    for step, (a, b) in enumerate(zip(reference, curve, strict=True), 1):
        assert abs(a - b) <= 1e-4 * abs(a), f"step {step}: ZeRO-3 {a} vs FSDP2 {b}"
    checkpoint = tmp_path / "fsdp" / "out" / "checkpoint-4"
    assert (checkpoint / "pytorch_model_fsdp_0").is_dir() and (checkpoint / "optimizer_0").is_dir()
    folder = subdir(tmp_path, "on-1")
    shutil.copytree(checkpoint, folder / "out" / "checkpoint-4")
    config = write_config(folder, tiny, twelve, engine="fsdp", output_dir=str(folder / "out"), **base)
    resumed = run(config, 1, folder)
    assert resumed["resumed_from_world_size"] == 2
    assert "gradient_accumulation_steps 3 -> 6 keeps the global batch of 6" in logs(folder)
    for step, (a, b) in enumerate(zip(curve[4:], losses(resumed)[4:], strict=True), 5):
        assert abs(a - b) <= 1e-4 * abs(a), f"1 rank, step {step}: {b} vs the 2-rank run's {a}"
    export = tmp_path / "fsdp" / "out" / "export"
    if method["finetuning_type"] == "full":
        from transformers import AutoModelForCausalLM

        AutoModelForCausalLM.from_pretrained(export)
    else:
        assert (export / "adapter_model.safetensors").is_file()


def test_fsdp2_cpu_ram_efficient_loading_trains_alike_and_its_load_memory_is_reported(tmp_path, twelve):
    """fsdp_config.cpu_ram_efficient_loading on one node of 2 processes: accelerate shards the model from rank
    0's weights, broadcast: the same losses as without. With transformers 5 every rank still reads the whole
    model at load (its fate in fsdp.PASSED says so): when a transformers release reads it on local rank 0 only,
    rank 1's figure drops and this test asks for the fate to be rewritten."""
    from hyft_trainer.tiny import build

    # stored in bfloat16, trained in float32: a rank that reads the weights holds a 40 MB copy of its own
    model = build(tmp_path / "tiny-10m", "7b", hidden_size=512, layers=4, dtype="bfloat16")
    runs = {}
    for efficient in (False, True):
        folder = subdir(tmp_path, f"efficient-{efficient}")
        config = write_config(folder, model, twelve, output_dir=str(folder / "out"), engine="fsdp", max_steps=3,
                              finetuning_type="full", learning_rate=1e-3, offload_optimizer=False,
                              offload_param=False, fsdp_config={"cpu_ram_efficient_loading": efficient})
        runs[efficient] = run(config, 1, folder, extra_env={"NPROC_PER_NODE": "2"})
    for efficient, report in runs.items():
        assert report["world_size"] == 2 and report["engine"] == "fsdp2"
        rank0, rank1 = report["host_model_bytes_at_load_by_rank"]
        assert rank0 > 30e6 and rank1 > rank0 / 2, (efficient, rank0, rank1)
    for step, (a, b) in enumerate(zip(losses(runs[False]), losses(runs[True]), strict=True), 1):
        assert abs(a - b) <= 1e-4 * abs(a), f"step {step}: {a} read on every rank vs {b} broadcast from rank 0"


def scrape(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        if line.startswith("hyft_train_") and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name.split("{")[0]] = float(value)
    return values


def test_sigterm_saves_a_checkpoint_and_the_restart_continues_the_same_curve(tiny, memorisable, tmp_path):
    reference = write_config(subdir(tmp_path, "ref"), tiny, memorisable, max_steps=40,
                             output_dir=str(tmp_path / "ref" / "out"))
    uninterrupted = losses(run(reference, 1, tmp_path / "ref"))

    metrics_port = free_port()
    interrupted = write_config(tmp_path, tiny, memorisable, max_steps=40, metrics_port=metrics_port)
    termination_log = tmp_path / "termination-log"
    procs = launch(interrupted, 1, tmp_path, extra_env={"HYFT_TERMINATION_LOG": str(termination_log)})
    seen = []
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:  # the metrics endpoint, scraped over HTTP during the run
        values = scrape(metrics_port)
        if values and values.get("hyft_train_global_step", 0) >= 1:
            seen.append(values)
        if values and values.get("hyft_train_global_step", 0) >= 8:
            break
        time.sleep(0.05)
    procs[0][0].send_signal(signal.SIGTERM)
    assert wait(procs) == [0], logs(tmp_path)[-3000:]
    assert "stopped by SIGTERM at step" in logs(tmp_path)
    assert MODEL_LOADING in logs(tmp_path)  # the line the fail-fast tests look for, said once a model loads
    # exit 0, and the pod's termination message tells the operator it was interrupted, not finished
    assert termination_log.read_text().startswith("hyft: stopped early by SIGTERM")

    steps = [v["hyft_train_global_step"] for v in seen]
    assert steps == sorted(steps) and steps[-1] > steps[0], "step did not rise"
    assert all("hyft_train_loss" in v for v in seen[1:])
    stamps = [v["hyft_train_last_step_timestamp_seconds"] for v in seen]
    assert stamps[-1] > stamps[0], "last-step timestamp did not advance"
    assert seen[-1]["hyft_train_total_steps"] == 40

    from hyft_trainer.checkpoints import newest_complete, step_of

    checkpoint = newest_complete(tmp_path / "out")
    assert checkpoint is not None and not (tmp_path / "out" / "export").exists()
    k = step_of(checkpoint)
    assert 8 <= k < 40

    resumed = run(interrupted, 1, tmp_path)
    assert resumed["resumed_from"] == str(checkpoint)
    history = [h for h in resumed["log_history"] if "loss" in h]
    assert history[0]["step"] <= k + 1 and history[-1]["step"] == 40
    assert abs(history[-1]["loss"] - uninterrupted[-1]) <= 1e-4 * abs(uninterrupted[-1])


def test_a_half_written_checkpoint_is_never_resumed(tiny, memorisable, tmp_path):
    from hyft_trainer.checkpoints import newest_complete

    config = write_config(tmp_path, tiny, memorisable, max_steps=4, save_steps=2)
    run(config, 1, tmp_path)
    broken = tmp_path / "out" / "checkpoint-99"
    broken.mkdir()
    (broken / "trainer_state.json").write_text("{")
    assert newest_complete(tmp_path / "out").name == "checkpoint-4"


@pytest.mark.parametrize("change, message", [
    ({"lora_rnak": 8}, "lora_rnak: unknown key (did you mean 'lora_rank'?)"),
    ({"quantization_bit": 8}, "quantization_bit 8: ZeRO-3 shards 4-bit bitsandbytes weights only"),
    ({"quantization_bit": 8, "zero_stage": 2, "offload_param": False, "deepspeed": {"zero_optimization": {"stage": 3}}},
     "quantization_bit 8: ZeRO-3 shards 4-bit bitsandbytes weights only"),  # a brought DeepSpeed JSON's stage
    ({"deepspeed": {"bf16": {"enabled": True}}, "bf16": False}, "deepspeed bf16.enabled is true but bf16 is false"),
    ({"data_files": [{"path": "/nope/data.jsonl"}]}, "data: /nope/data.jsonl: no such file or folder"),
    ({"deepspeed": {"train_batch_size": 64, "zero_optimization": {"stage": 2}}},
     "train_batch_size 64 != per_device_train_batch_size 1 x gradient_accumulation_steps 1 x world size 1"),
])
def test_bad_configs_fail_fast_with_exit_code_2(tiny, memorisable, tmp_path, change, message):
    config = write_config(tmp_path, tiny, memorisable, **change)
    codes = wait(launch(config, 1, tmp_path), timeout=300)
    assert codes == [2], logs(tmp_path)[-2000:]
    assert message in logs(tmp_path) and "Traceback" not in logs(tmp_path)
    assert MODEL_LOADING not in logs(tmp_path)  # fast: said before the model loads


# ------------------------------------------------------------------ preflight
def preflight_run(tmp_path, procs, code, message):
    codes = wait(procs, timeout=300)
    text = logs(tmp_path)
    assert set(codes) == {code}, text[-3000:]
    assert message in text and "Traceback" not in text.split("hyft: preflight")[-1], text[-3000:]
    assert MODEL_LOADING not in text  # the preflight stops the gang before anything slow
    return text


def test_preflight_an_unresolvable_master_fails_within_its_bound(tiny, memorisable, tmp_path):
    """A worker node whose MASTER_ADDR does not resolve. In a network namespace of its own, with only
    loopback: the name's lookup never leaves this machine."""
    from hyft_trainer.contract import EXIT_MASTER_UNREACHABLE

    config = write_config(tmp_path, tiny, memorisable, preflight_timeout=10)
    proc = launch_node(config, 1, 2, free_port(), tmp_path, {"MASTER_ADDR": "hyft-test-master.invalid"},
                       wrapper=("unshare", "--net", "--"))
    preflight_run(tmp_path, [proc], EXIT_MASTER_UNREACHABLE,
                  "MASTER_ADDR hyft-test-master.invalid:")
    assert "does not resolve" in logs(tmp_path) and "after 10s (preflight_timeout)" in logs(tmp_path)


def test_preflight_a_small_dev_shm_fails(tiny, memorisable, tmp_path):
    """/dev/shm as a 1 MiB tmpfs, mounted in a mount namespace of this node's own."""
    from hyft_trainer.contract import EXIT_SHM_TOO_SMALL

    config = write_config(tmp_path, tiny, memorisable)
    shell = ("unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
             'mount -t tmpfs -o size=1m hyft-test-shm /dev/shm && exec "$@"', "sh")
    proc = launch_node(config, 0, 1, free_port(), tmp_path, wrapper=shell)
    preflight_run(tmp_path, [proc], EXIT_SHM_TOO_SMALL, "/dev/shm is 1 MiB")


def test_preflight_an_unwritable_output_fails(tiny, memorisable, tmp_path):
    from hyft_trainer.contract import EXIT_OUTPUT_UNUSABLE

    (tmp_path / "a-file").write_text("not a folder")
    config = write_config(tmp_path, tiny, memorisable, output_dir=str(tmp_path / "a-file" / "out"))
    preflight_run(tmp_path, launch(config, 1, tmp_path), EXIT_OUTPUT_UNUSABLE, "is not writable")


def test_preflight_an_output_the_nodes_do_not_share_fails_on_every_node(tiny, memorisable, tmp_path):
    """Node 1 writes to a folder of its own, as with a node-local volume: it cannot see rank 0's marker."""
    from hyft_trainer.contract import EXIT_OUTPUT_UNUSABLE

    master = write_config(tmp_path, tiny, memorisable, output_dir=str(tmp_path / "out-node0"))
    worker = write_config(tmp_path, tiny, memorisable, output_dir=str(tmp_path / "out-node1"))
    port = free_port()
    procs = [launch_node(master, 0, 2, port, tmp_path), launch_node(worker, 1, 2, port, tmp_path)]
    preflight_run(tmp_path, procs, EXIT_OUTPUT_UNUSABLE, "is not shared between the nodes: rank(s) [1] do not see")
    assert not list((tmp_path / "out-node0" / MARKER_DIR).iterdir())


def test_preflight_a_node_that_never_joins_fails_the_master(tiny, memorisable, tmp_path):
    from hyft_trainer.contract import EXIT_GANG_INCOMPLETE

    config = write_config(tmp_path, tiny, memorisable, preflight_timeout=10)
    text = preflight_run(tmp_path, [launch_node(config, 0, 2, free_port(), tmp_path)], EXIT_GANG_INCOMPLETE,
                         "not every one of the 2 nodes joined the rendezvous")
    assert "1/2 clients joined" in text  # torchrun's own words, kept in the message


GANG_CHECK = """
import datetime, os, sys, time
import torch.distributed as dist
from hyft_trainer.preflight import PreflightError, check_gang

dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
if dist.get_rank() == 1:
    time.sleep(30)  # stuck before the collective (a hung mount, a slow model load)
    print("rank 1 woke", flush=True)  # only if rank 0 waited for it
    os._exit(0)
try:
    check_gang(sys.argv[1], 3, "cpu")
except PreflightError as err:
    print(f"exit {err.exit_code}: {err}", flush=True)
    os._exit(err.exit_code)
os._exit(0)
"""


def test_preflight_a_rank_stuck_before_the_all_reduce_fails_the_others(tmp_path):
    from hyft_trainer.contract import EXIT_COLLECTIVE_TIMEOUT

    script = tmp_path / "gang_check.py"
    script.write_text(GANG_CHECK)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(free_port()), str(script), str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert f"exit {EXIT_COLLECTIVE_TIMEOUT}: an all-reduce of the marker's name across all 2 ranks did not " \
           "finish within 3s (preflight_timeout)" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "rank 1 woke" not in out.stdout  # rank 0 did not wait out rank 1's 30 s
    assert not list((tmp_path / MARKER_DIR).iterdir())


def test_preflight_a_rank_that_dies_is_a_backend_failure_not_a_timeout(tmp_path):
    """Rank 1's process is gone before the all-reduce: gloo reports the closed connection, and the
    preflight says the backend failed (exit 9), not that the gang is slow (exit 7)."""
    from hyft_trainer.contract import EXIT_COLLECTIVE_FAILED

    script = tmp_path / "gang_check.py"
    script.write_text(GANG_CHECK.replace("time.sleep(30)", "pass"))
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(free_port()), str(script), str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert f"exit {EXIT_COLLECTIVE_FAILED}: an all-reduce of the marker's name across all 2 ranks failed in the " \
           "collective backend (gloo)" in out.stdout, out.stdout + out.stderr[-2000:]


# ------------------------------------------------------------------ GPUs and threads
def test_a_node_that_expects_a_gpu_it_cannot_use_fails_fast_with_the_facts(tiny, memorisable, tmp_path):
    """The pod contract says 1 GPU; this machine (CUDA hidden by the test session, as by a broken device
    plugin) has none: exit 8 with torch's CUDA, the driver and CUDA_VISIBLE_DEVICES, before any training."""
    from hyft_trainer.contract import EXIT_GPU_UNAVAILABLE

    config = write_config(tmp_path, tiny, memorisable, bf16=True)
    procs = launch(config, 1, tmp_path, extra_env={"HYFT_GPUS_PER_NODE": "1"})
    codes = wait(procs, timeout=60)
    text = logs(tmp_path)
    assert codes == [EXIT_GPU_UNAVAILABLE], text[-3000:]
    assert "preflight: this node expects 1 GPU(s) (spec.gpusPerNode) but torch can use 0" in text
    assert "CUDA_VISIBLE_DEVICES ''" in text and "NVIDIA driver:" in text and "Traceback" not in text
    assert "bf16: off" not in text  # never a silent float32 run
    assert "preflight passed" not in text and not (tmp_path / "out" / "report.json").exists()


@contextlib.contextmanager
def limited_cgroup(controller: str, v1_limits: dict[str, str], v2_limits: dict[str, str]):
    """A cgroup with these limits, as a pod's (cgroup v1's hierarchy for controller, or v2's where the root
    delegates it), removed afterwards (its processes have exited); yields the wrapper that runs a command in it."""
    import uuid

    v1, v2 = Path(f"/sys/fs/cgroup/{controller}"), Path("/sys/fs/cgroup")
    delegated = v2 / "cgroup.subtree_control"
    if (v1 / next(iter(v1_limits))).exists():
        root, limits = v1, v1_limits
    elif controller in (delegated.read_text().split() if delegated.exists() else []):
        root, limits = v2, v2_limits
    else:
        pytest.skip(f"no cgroup {controller} controller to limit a process with")
    folder = root / f"hyft-test-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    try:
        for name, value in limits.items():
            (folder / name).write_text(value)
        yield ("sh", "-c", f'echo $$ > {folder}/cgroup.procs && exec "$@"', "sh")
    finally:
        folder.rmdir()


@pytest.fixture
def one_cpu_cgroup():
    """A pod's CPU limit of 1."""
    with limited_cgroup("cpu", {"cpu.cfs_quota_us": "100000", "cpu.cfs_period_us": "100000"},
                        {"cpu.max": "100000 100000"}) as wrapper:
        yield wrapper


def test_openmp_threads_follow_the_pods_cpu_limit(tiny, memorisable, tmp_path, one_cpu_cgroup):
    """torchrun would set 1 thread only for several processes; the launcher shares the pod's CPU limit
    between its processes. One process, unlimited: every CPU of this machine; limited to 1 CPU: 1."""
    config = write_config(tmp_path, tiny, memorisable, max_steps=2)
    unset = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    from hyft_trainer.gpus import node_cpu_limit, omp_threads

    free = run(config, 1, tmp_path, env=unset)
    assert free["omp_threads"] == omp_threads(node_cpu_limit(), len(os.sched_getaffinity(0)), 1) >= 1
    assert set(free["fabric"]) == {"nccl_version", "rdma_devices", "memlock_bytes", "nccl_env"}
    shutil.rmtree(tmp_path / "out")
    limited = run(config, 1, tmp_path, env=unset, wrapper=one_cpu_cgroup)
    assert limited["omp_threads"] == 1, limited["omp_threads"]
    assert "1 OpenMP thread(s) per process (CPU limit 1" in logs(tmp_path)


def test_without_a_gpu_recomputation_is_dropped_only_where_the_pods_memory_holds_the_job(tiny, memorisable,
                                                                                          tmp_path):
    """gradient_checkpointing auto on a node with no GPU: off on this machine (the tiny job fits its memory many
    times over), on in a pod whose memory limit is just under what the job's estimate without recomputation
    needs (over the margin); the loss is the same."""
    from hyft_trainer import offload
    from hyft_trainer.config import parse_config
    from hyft_trainer.estimate import load_shape

    config = write_config(tmp_path, tiny, memorisable, max_steps=3, offload_optimizer="auto", offload_param="auto")
    free = run(config, 1, tmp_path)
    assert free["offload"]["gradient_checkpointing"] is False, free["offload"]
    without = offload.options_for(parse_config(yaml.safe_load(config.read_text())), load_shape(str(tiny)), 1, 1,
                                  on_gpu=False, recompute=False)
    need = next(e.host_bytes_per_node for e in without if (e.stage, e.offload) == (3, "optimizer"))
    limit = int(need / offload.HOST_MARGIN) - 2**24
    shutil.rmtree(tmp_path / "out")
    with limited_cgroup("memory", {"memory.limit_in_bytes": str(limit)}, {"memory.max": str(limit)}) as wrapper:
        limited = run(config, 1, tmp_path, wrapper=wrapper)
    assert limited["offload"]["gradient_checkpointing"] is True, limited["offload"]
    assert f"gradient checkpointing on (host memory: optimizer without recomputation {need / 2**30:.1f} GiB" in \
        logs(tmp_path)
    assert losses(limited) == pytest.approx(losses(free), abs=1e-5)


@pytest.fixture(scope="module", params=["gptq", "awq"])
def tiny_quantized(request, tmp_path_factory):
    """A tiny model, 128 wide (AWQ's clip search needs it), quantized to 4 bits by gptqmodel on the CPU (in a
    process of its own, in a folder of its own: gptqmodel writes its quantization log under the working
    directory's logs/)."""
    from hyft_trainer.tiny import build

    models = tmp_path_factory.mktemp("models")
    src, out = build(models / "tiny-128", "small", hidden_size=128), models / f"tiny-{request.param}"
    subprocess.run([sys.executable, "-c", "import sys; from hyft_trainer.tiny import quantize; "
                    "quantize(sys.argv[1], sys.argv[2], sys.argv[3])", str(src), str(out), request.param],
                   check=True, capture_output=True, timeout=RUN_TIMEOUT, cwd=models)
    return request.param, out


def test_lora_trains_on_a_gptq_or_awq_base_on_two_ranks(tiny_quantized, memorisable, tmp_path):
    """A GPTQ- or AWQ-quantized base (4 bits, as Tencent's Hunyuan-*-GPTQ-Int4 and -AWQ-Int4) loads through its
    own quantization_config (transformers, gptqmodel's torch kernels on CPU) and trains LoRA on 2 ranks: the GPTQ
    base under zero_stage auto (plain DDP: this float32 LoRA job fits), the AWQ base under ZeRO-2 (which auto
    takes where DDP does not fit; ZeRO-3 is refused for such bases), offloading as auto decides. lora_target
    all adapts the quantized projections, the loss falls, the adapter is exported and report.json counts the
    quantized layers; merge_lora is refused with what to do."""
    method, model = tiny_quantized
    assert json.loads((model / "config.json").read_text())["quantization_config"]["quant_method"] == method
    stage = {"gptq": "auto", "awq": 2}[method]
    config = write_config(tmp_path, model, memorisable, max_steps=40, learning_rate=1e-2, lora_target="all",
                          zero_stage=stage, offload_optimizer="auto", offload_param="auto")
    report = run(config, 2, tmp_path)
    assert report["world_size"] == 2 and report["offload"]["zero_stage"] == {"gptq": 0, "awq": 2}[method]
    assert report["engine"] == {"gptq": "ddp", "awq": "deepspeed"}[method], report["offload"]
    assert report["quantization"]["method"] == method and report["quantization"]["bits"] == 4
    assert report["quantization"]["layers"] >= 2 * 7  # q, k, v, o, gate, up, down in each of the 2 layers
    assert falls(losses(report)), losses(report)
    adapter = tmp_path / "out" / "export"
    targets = set(json.loads((adapter / "adapter_config.json").read_text())["target_modules"])
    assert {"q_proj", "o_proj", "gate_proj", "down_proj"} <= targets, targets
    assert (adapter / "adapter_model.safetensors").is_file()
    merging = write_config(tmp_path, model, memorisable, zero_stage=0, offload_optimizer=False,
                           offload_param=False, merge_lora=True, output_dir=str(tmp_path / "merging"))
    assert wait(launch(merging, 1, tmp_path), timeout=300) == [2]
    assert f"merge_lora: the base model is {method.upper()}-quantized" in logs(tmp_path)


def test_zero3_with_a_gptq_base_is_refused(tiny, memorisable, tmp_path):
    import shutil

    gptq = tmp_path / "gptq-model"
    shutil.copytree(tiny, gptq)
    cfg = json.loads((gptq / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (gptq / "config.json").write_text(json.dumps(cfg))
    config = write_config(tmp_path, gptq, memorisable)
    assert wait(launch(config, 1, tmp_path), timeout=300) == [2]
    assert "GPTQ-quantized: it cannot be sharded by ZeRO-3" in logs(tmp_path) and "Traceback" not in logs(tmp_path)


@pytest.fixture(scope="module")
def llamafactory_data(tmp_path_factory):
    """A LLaMA-Factory data folder with the data sets the corpus YAMLs name."""
    from tests.llamafactory_corpus import DATASET_INFO

    folder = tmp_path_factory.mktemp("lf-data")
    (folder / "dataset_info.json").write_text(json.dumps(DATASET_INFO))
    chats = make_samples(8, seed=3)
    (folder / "car_sft.json").write_text(json.dumps(chats, ensure_ascii=False))
    alpaca = [{"instruction": s["messages"][-2]["content"], "input": "",
               "output": s["messages"][-1]["content"].split("<answer>")[-1].split("</answer>")[0].strip()}
              for s in make_samples(16, seed=4)]
    (folder / "identity.json").write_text(json.dumps(alpaca[:8], ensure_ascii=False))
    (folder / "alpaca_en_demo.json").write_text(json.dumps(alpaca[8:], ensure_ascii=False))
    return folder


@pytest.mark.parametrize("name", ["hunyuan_full", "hunyuan_a13b_full_sft", "llama3_lora_sft", "llama3_lora_sft_ds3",
                                  "llama3_lora_sft_ray", "llama3_full_sft", "qwen2_5vl_full_sft"])
def test_llamafactory_yamls_train_as_brought(tiny, tiny_a13b, llamafactory_data, tmp_path, name):
    """Tencent's published YAMLs and LLaMA-Factory's SFT examples, paths substituted: each trains, and each
    key without effect here is said once at start-up. Run where LLaMA-Factory runs them: a working folder
    whose data/ is the data folder (Tencent's YAMLs name no dataset_dir)."""
    from hyft_trainer.llamafactory_keys import NO_EFFECT
    from tests.llamafactory_corpus import CORPUS

    text, ds_json = CORPUS[name]
    deepspeed = tmp_path / "ds_config.json"
    deepspeed.write_text(json.dumps(ds_json or {}))
    config = tmp_path / f"{name}.yaml"
    model = tiny_a13b if name.startswith("hunyuan_a13b") else tiny  # A13B's own YAML on the tiny A13B
    config.write_text(text.format(model=model, dataset_dir=llamafactory_data, deepspeed=deepspeed,
                                  output=tmp_path / "out"))
    (tmp_path / "data").symlink_to(llamafactory_data)
    report = run(config, 1, tmp_path, cwd=tmp_path)
    log = logs(tmp_path)
    assert report["steps"] > 0 and report["data"]["valid"] == report["data"]["samples"]
    assert "match the model's chat_template token for token" in report["data"]["chat_template_check"]
    for key in yaml.safe_load(config.read_text()):
        if key in NO_EFFECT:
            assert log.count(f"hyft: {key}: has no effect here") == 1, key
    assert log.count("hyft: bf16: off, no GPU here: training in float32") == 1
    assert "Traceback" not in log


def test_training_skips_every_malformed_sample_and_says_so_at_start_up(tiny, tmp_path):
    from collections import Counter

    from tests import malformed

    data, expected, valid = malformed.write(tmp_path / "mixed.jsonl")
    config = write_config(tmp_path, tiny, data, skip_invalid_samples=True, max_steps=2, cutoff_len=1024,
                          report_to="tensorboard")
    report = run(config, 1, tmp_path)
    assert report["data"]["valid"] == valid and report["data"]["invalid"] == dict(Counter(expected.values()))
    assert list((tmp_path / "out" / "runs").glob("*/events.out.tfevents.*"))  # report_to: tensorboard
    log = logs(tmp_path)
    assert f"hyft: skipping {len(expected)} invalid of {valid + len(expected)} samples" in log
    assert "Traceback" not in log


def test_zero3_loads_each_process_shard_only(tmp_path, memorisable):
    """DeepSpeed's config is live before from_pretrained (zero.Init): with 2 processes each holds
    about half the model from the start, not a whole copy it partitions later."""
    from hyft_trainer.tiny import build

    big = build(tmp_path / "model", "small", hidden_size=2048, layers=6, dtype="bfloat16")  # ~230M params
    model_bytes = json.loads((big / "hyft_tiny.json").read_text())["parameters"] * 4  # trained in float32
    held = {}
    for nodes in (1, 2):
        config = write_config(subdir(tmp_path, f"n{nodes}"), big, memorisable, max_steps=1)
        held[nodes] = run(config, nodes, tmp_path / f"n{nodes}")["host_model_bytes_at_load"]
    assert held[1] > 0.9 * model_bytes
    assert held[2] < 0.65 * held[1], held


def test_a_chat_template_one_token_off_stops_training_with_a_diff(tiny, memorisable, tmp_path):
    import shutil

    changed = tmp_path / "model"
    shutil.copytree(tiny, changed)
    template = changed / "chat_template.jinja"
    text = template.read_text()
    eos = "<｜hy_place▁holder▁no▁2｜>"
    assert text.count(eos) == 1
    template.write_text(text.replace(eos, "<｜hy_place▁holder▁no▁3｜>"))  # the assistant turn's end token
    config = write_config(tmp_path, changed, memorisable)
    assert wait(launch(config, 1, tmp_path), timeout=300) == [2]
    log = logs(tmp_path)
    assert "the model's chat_template and hyft's small-family rendering differ at token" in log
    assert "chat_template: '" in log and "hyft:          '" in log and "Traceback" not in log
    assert not (tmp_path / "out" / "report.json").exists()


def test_the_data_is_prepared_once_per_job_and_the_other_node_maps_it(tiny, tmp_path):
    """Rank 0 tokenizes and packs into the shared data cache; node 1 waits, then memory-maps the same
    rows (it never tokenizes: its memory grows less), and a restart loads the cache without preparing."""
    data = tmp_path / "many.jsonl"
    data.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in make_samples(3000, seed=5)))
    config = write_config(tmp_path, tiny, data, max_steps=2, packing=True, cutoff_len=512)
    report = run(config, 2, tmp_path)
    cache = report["data_cache"]
    assert cache["built_here"] and Path(cache["folder"]).parent == tmp_path / "out" / ".hyft-data-cache"
    text = logs(tmp_path)
    assert "preparing the data once for every rank" in text and "waiting for global rank 0" in text
    assert f"loaded the prepared data from {cache['folder']}" in text  # node 1
    rank0, rank1 = cache["peak_rss_growth_by_rank"]
    assert rank1 < rank0 / 2, cache["peak_rss_growth_by_rank"]

    for log in tmp_path.glob("node*.log"):
        log.unlink()
    shutil.rmtree(tmp_path / "out" / "export")
    again = run(write_config(tmp_path, tiny, data, max_steps=4, packing=True, cutoff_len=512), 2, tmp_path)
    assert not again["data_cache"]["built_here"] and again["data_cache"]["folder"] == cache["folder"]
    assert "preparing the data" not in logs(tmp_path)


def test_the_gpu_check_dry_run_writes_its_figures(tmp_path):
    """make gpu-check's own logic on the CPU: the fail-fast step sees exit 8, the default path trains, and so
    do QLoRA, FSDP2, fp16 (float32 here, said) and the default plan against the recipe's."""
    out = tmp_path / "gpu-check.json"
    proc = subprocess.run([sys.executable, "-m", "hyft_trainer.gpu_check", "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] and result["facts"]["count"] == 0
    assert result["fail_fast"]["passed"] and "this node expects 1 GPU(s)" in result["fail_fast"]["message"]
    assert result["train"]["exit_code"] == 0 and result["train"]["steps"] == 3
    assert result["memory"]["estimate_gpu_bytes"] > 0 and result["mfu"] is None
    assert result["qlora"]["exit_code"] == 0 and result["qlora"]["quantization"]["bits"] == 4
    assert result["fsdp2"]["exit_code"] == 0 and result["fsdp2"]["engine"] == "fsdp2"
    assert result["fp16"]["exit_code"] == 0 and result["fp16"]["overflow_skipped_steps"] == 0
    plans = result["default_vs_recipe"]
    # on a CPU the recipe offloads the optimizer (CPU Adam) under ZeRO-3, recomputing; the default plan of this
    # float32 LoRA job, which fits this machine's memory either way, is plain DDP without recomputation: the
    # same loss
    chosen = [{k: plans[p]["offload"][k] for k in ("zero_stage", "optimizer", "param", "gradient_checkpointing")}
              for p in ("recipe", "default")]
    assert chosen == [{"zero_stage": 3, "optimizer": True, "param": False, "gradient_checkpointing": True},
                      {"zero_stage": 0, "optimizer": False, "param": False, "gradient_checkpointing": False}]
    assert "plain DDP, gradient checkpointing off (host memory: plain DDP without recomputation" in \
        plans["default"]["offload"]["reason"]
    assert plans["default_plan_vs_recipe"] > 0 and plans["loss_difference"] < 1e-4


@pytest.mark.parametrize("engine", ["deepspeed", "fsdp"])
def test_a_guide_recipe_with_transformers_arguments_trains_as_brought(tiny, llamafactory_data, tmp_path, engine):
    """The guide's keys that are transformers' own (optim, adam_*, warmup_steps, the data loader, best-
    checkpoint evaluation) reach TrainingArguments as written, the best checkpoint is the one exported,
    and each key without effect here (logging_dir; fp16 on a CPU) is said once; with its DeepSpeed JSON,
    and with LLaMA-Factory's fsdp keys instead (FSDP2, sharded checkpoints)."""
    import torch

    from tests.llamafactory_corpus import DS_Z3_FP16, GUIDE_RECIPE, GUIDE_RECIPE_FSDP

    deepspeed = tmp_path / "ds_z3_fp16.json"
    deepspeed.write_text(json.dumps(DS_Z3_FP16))
    config = tmp_path / "recipe.yaml"
    recipe = GUIDE_RECIPE if engine == "deepspeed" else GUIDE_RECIPE_FSDP
    config.write_text(recipe.format(model=tiny, dataset_dir=llamafactory_data, deepspeed=deepspeed,
                                    output=tmp_path / "out"))
    report = run(config, 1, tmp_path)
    log = logs(tmp_path)
    assert report["engine"] == {"deepspeed": "deepspeed", "fsdp": "fsdp2"}[engine]
    assert log.count("hyft: logging_dir: has no effect here") == 1
    assert log.count("hyft: fp16: off, no GPU here: training in float32") == 1
    evals = {h["step"]: h["eval_loss"] for h in report["log_history"] if "eval_loss" in h}
    best_step = min(evals, key=evals.get)
    assert report["best_checkpoint"] == str(tmp_path / "out" / f"checkpoint-{best_step}")
    args = torch.load(Path(report["best_checkpoint"]) / "training_args.bin", weights_only=False)
    assert (args.optim, args.adam_beta2, args.warmup_steps, args.dataloader_pin_memory,
            args.dataloader_num_workers, args.metric_for_best_model) == ("adamw_torch", 0.95, 1, False, 4, "eval_loss")
    from safetensors.torch import load_file

    exported = load_file(tmp_path / "out" / "export" / "adapter_model.safetensors")
    best = _checkpoint_adapter(Path(report["best_checkpoint"]), tmp_path / "best.pt")
    assert exported.keys() == best.keys()
    assert all(torch.equal(exported[k], best[k]) for k in exported)
    assert "Traceback" not in log


def _checkpoint_adapter(checkpoint: Path, scratch: Path) -> dict:
    """A checkpoint's LoRA weights, named as the exported adapter names them: from adapter_model.safetensors,
    or from FSDP2's sharded checkpoint (torch's distributed checkpoint, converted to one file)."""
    import torch
    from safetensors.torch import load_file

    if (checkpoint / "adapter_model.safetensors").is_file():
        return load_file(checkpoint / "adapter_model.safetensors")
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(checkpoint / "pytorch_model_fsdp_0", scratch)
    return torch.load(scratch, weights_only=True)["model"]
