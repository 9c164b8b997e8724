"""Host-memory admission against `hyft estimate`'s figures: the MemoryRisk condition, Enforce
failing a job before any pod, and `hyft estimate -f` printing the same."""
from __future__ import annotations

import datetime as dt

import yaml

from hyft_operator import admission, api, cli, lifecycle
from hyft_trainer.choices import SIZES
from hyft_trainer.estimate import GIB, Shape, estimate
from tests.helpers import ROOT, load_example

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def seven_b_full(memory="64Gi", check="Warn", **spec):
    """examples/hunyuan-2node-full-zero3.yaml: 7B, full fine-tuning, ZeRO-3 with parameter offload."""
    body = load_example(ROOT / "examples" / "hunyuan-2node-full-zero3.yaml")
    body["spec"].update(memory=memory, **spec)
    body["spec"]["deepspeed"].update(offloadOptimizer=True, offloadParams=True)
    body["spec"]["runPolicy"]["memoryCheck"] = check
    return body


def test_a_7b_full_fine_tune_with_param_offload_under_64gi_is_at_risk_with_both_figures():
    job = api.HunyuanFineTune.model_validate(seven_b_full())
    check = admission.check_memory(job)
    expected = next(e for e in estimate(Shape(**SIZES["7B"]), 2, 8, "full", seq=8192)
                    if (e.stage, e.offload) == (3, "params+optimizer"))
    assert check.at_risk and check.need_bytes == expected.host_bytes_per_node and check.limit_bytes == 64 * GIB
    assert f"{expected.host_bytes_per_node / GIB:.1f} GiB" in check.message and "64.0 GiB" in check.message
    assert "method.type: lora" in check.fitting and any(f.startswith("nodes: ") for f in check.fitting)
    # each suggested node count really fits, and one node fewer would not
    nodes = int(next(f for f in check.fitting if f.startswith("nodes: ")).split()[1])
    for n, fits in ((nodes, True), (nodes - 1, False)):
        body = seven_b_full(nodes=n)
        assert admission.check_memory(api.HunyuanFineTune.model_validate(body)).at_risk is not fits


def test_warn_sets_the_condition_once_and_creates_the_pods():
    job = api.HunyuanFineTune.model_validate(seven_b_full())
    first = lifecycle.plan(job, [], NOW)
    assert first.create == [0, 1] and "MemoryRisk" in [e.reason for e in first.events]
    risk = next(c for c in first.status.conditions if c.type == "MemoryRisk")
    assert (risk.status, risk.reason) == ("True", "NeedsMoreMemory") and "64.0 GiB" in risk.message
    again = lifecycle.plan(api.HunyuanFineTune.model_validate({**seven_b_full(), "status": first.status.model_dump()}),
                           [], NOW)
    assert "MemoryRisk" not in [e.reason for e in again.events]


def test_enforce_fails_the_job_before_any_pod():
    plan = lifecycle.plan(api.HunyuanFineTune.model_validate(seven_b_full(check="Enforce")), [], NOW)
    assert plan.create == [] and plan.status.phase == "Failed"
    failed = next(c for c in plan.status.conditions if c.type == "Failed")
    assert failed.reason == "MemoryRisk" and "not started" in failed.message and "would fit" in failed.message


def test_enough_memory_or_an_unknown_size_starts_the_job():
    fits = lifecycle.plan(api.HunyuanFineTune.model_validate(seven_b_full(memory="900Gi", check="Enforce")), [], NOW)
    assert fits.create == [0, 1]
    assert next(c for c in fits.status.conditions if c.type == "MemoryRisk").reason == "Fits"
    body = seven_b_full(check="Enforce")
    body["spec"]["model"]["path"] = "my-model"
    unknown = lifecycle.plan(api.HunyuanFineTune.model_validate(body), [], NOW)
    assert unknown.create == [0, 1]
    assert next(c for c in unknown.status.conditions if c.type == "MemoryRisk").status == "Unknown"


def test_hyft_estimate_f_prints_what_the_condition_says(tmp_path, capsys):
    body = seven_b_full()
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(body))
    cli.main(["estimate", "-f", str(path)])
    out = capsys.readouterr().out
    message = admission.check_memory(api.HunyuanFineTune.model_validate(body)).message
    assert message in out and "ZeRO-3, offload params+optimizer" in out


def test_a_gptq_release_named_in_the_model_path_is_priced_at_its_bits():
    """Tencent's Hunyuan-7B-Instruct-GPTQ-Int4 on the cluster: the operator cannot read its config.json, so
    the bits its name gives price the weights, as the trainer's own estimate would from the folder."""
    from hyft_operator import sizing
    from tests.jobs import cpu_job

    def lora(path):
        body = cpu_job("q", nodes=1, gpusPerNode=1, training={"precision": "bf16"}, method={"type": "lora"},
                       deepspeed={"stage": 2}, gpuMemory="24Gi", memory="64Gi")
        body["spec"]["model"]["path"] = path
        return api.HunyuanFineTune.model_validate(body)

    plain, gptq = lora("models/Hunyuan-7B-Instruct"), lora("models/Hunyuan-7B-Instruct-GPTQ-Int4")
    shape, where = sizing.model_shape(gptq)
    assert shape.weight_bits == 4 and where == "7B, from the model path, 4-bit weights from the model path"
    assert sizing.model_shape(plain)[0].weight_bits == 16
    assert sizing.model_shape(lora("models/Hunyuan-7B-Instruct-AWQ-Int8"))[0].weight_bits == 8
    priced, sixteen = (admission.check_memory(j).estimate for j in (gptq, plain))
    assert priced.gpu_bytes_per_device < sixteen.gpu_bytes_per_device
