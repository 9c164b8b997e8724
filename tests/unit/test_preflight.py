"""The node's preflight: each check fails for its own reason, with its message and exit code,
before torchrun or the model start; and a healthy node passes."""
from __future__ import annotations

import json
import os
import socket
from types import SimpleNamespace

import pytest
import yaml

from hyft_trainer import launcher, preflight
from hyft_trainer.choices import SIZES
from hyft_trainer.config import TrainerConfig
from hyft_trainer.contract import EXIT_MASTER_UNREACHABLE, EXIT_OUTPUT_UNUSABLE, EXIT_SHM_TOO_SMALL


def config(tmp_path, **changes):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (tmp_path / "chat.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                                  {"role": "assistant", "content": "yo"}]}) + "\n")
    values = {"model_name_or_path": str(model), "data_files": [{"path": str(tmp_path / "chat.jsonl")}],
              "output_dir": str(tmp_path / "out"), **changes}
    return TrainerConfig(**values)


def seven_b_config_json(folder):
    size = SIZES["7B"]
    (folder / "config.json").write_text(json.dumps({
        "hidden_size": size["hidden"], "num_hidden_layers": size["layers"], "num_attention_heads": size["heads"],
        "num_key_value_heads": size["kv_heads"], "head_dim": size["head_dim"], "intermediate_size": size["ffn"],
        "vocab_size": size["vocab"], "tie_word_embeddings": size["tied"]}))


def test_an_unresolvable_master_fails_within_its_bound():
    def unresolvable(address, timeout):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    clock = iter(range(100)).__next__  # each call one second later
    with pytest.raises(preflight.PreflightError) as err:
        preflight.check_master("job-master-0.job.ns.svc", 29500, 5, connect=unresolvable, sleep=lambda s: None,
                               clock=clock)
    assert err.value.exit_code == EXIT_MASTER_UNREACHABLE
    assert "job-master-0.job.ns.svc:29500 does not resolve" in str(err.value) and "after 5s" in str(err.value)


def test_a_master_port_that_refuses_fails_and_one_that_listens_passes():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(preflight.PreflightError) as err:
        preflight.check_master("127.0.0.1", closed_port, 0.5, sleep=lambda s: None)
    assert err.value.exit_code == EXIT_MASTER_UNREACHABLE and "does not accept connections" in str(err.value)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        preflight.check_master("127.0.0.1", server.getsockname()[1], 5)


def test_a_small_dev_shm_fails_naming_the_setting(monkeypatch):
    preflight.check_shm(nproc_per_node=1, loader_workers=0, path="/")  # a real filesystem, large enough
    small = SimpleNamespace(f_blocks=64, f_frsize=1024 * 1024)  # a 64 MiB /dev/shm, simulated
    monkeypatch.setattr(os, "statvfs", lambda path: small)
    with pytest.raises(preflight.PreflightError) as err:
        preflight.check_shm(nproc_per_node=8, loader_workers=2)
    assert err.value.exit_code == EXIT_SHM_TOO_SMALL
    assert "/dev/shm is 64 MiB" in str(err.value) and "spec.shmSize" in str(err.value)


def test_an_unwritable_output_fails(tmp_path):
    (tmp_path / "taken").write_text("a file where the output folder should be")
    with pytest.raises(preflight.PreflightError) as err:
        preflight.check_output(config(tmp_path, output_dir=str(tmp_path / "taken" / "out")), "host")
    assert err.value.exit_code == EXIT_OUTPUT_UNUSABLE and "not writable" in str(err.value)


def test_an_output_without_room_for_a_checkpoint_fails(tmp_path, monkeypatch):
    cfg = config(tmp_path, finetuning_type="full")
    seven_b_config_json(tmp_path / "model")
    need = preflight.checkpoint_bytes(cfg)
    assert need > 8e9 * 14  # 16-bit weights, fp32 master copy and two Adam moments for ~8B parameters
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: SimpleNamespace(free=int(need) - 1))
    with pytest.raises(preflight.PreflightError) as err:
        preflight.check_output(cfg, "host")
    assert err.value.exit_code == EXIT_OUTPUT_UNUSABLE and "GiB free" in str(err.value)
    lora = config(tmp_path, finetuning_type="lora", save_only_model=True)
    assert preflight.checkpoint_bytes(lora) < need / 5  # the frozen base is not in a LoRA checkpoint's states


def test_the_launcher_exits_with_the_checks_code_and_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(f_blocks=1, f_frsize=4096))
    monkeypatch.setattr(launcher.gpus, "probe", lambda env: launcher.gpus.GpuFacts())
    termination = tmp_path / "termination-log"
    monkeypatch.setenv("HYFT_TERMINATION_LOG", str(termination))
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path).model_dump(mode="json")))
    assert launcher.main([str(path)]) == EXIT_SHM_TOO_SMALL
    assert "preflight: /dev/shm is 0 MiB" in capsys.readouterr().err
    assert termination.read_text().startswith("preflight: /dev/shm")


def _gang_minimum_of(rank, port, values, out):
    import torch.distributed as dist

    from hyft_trainer.preflight import gang_minimum

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=len(values))
    out[rank] = gang_minimum(values[rank], "cpu")
    dist.destroy_process_group()


def test_nodes_of_different_gpus_agree_on_the_smallest():
    """The offload decision's input, as every rank sees it after the gang's MIN (an H100 node and an H200 node
    then both plan for 80 GiB)."""
    import torch.multiprocessing as mp

    from hyft_trainer.launcher import free_port

    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_gang_minimum_of, args=(free_port(), [141 * 2**30, 80 * 2**30], out), nprocs=2)
        assert dict(out) == {0: 80 * 2**30, 1: 80 * 2**30}
