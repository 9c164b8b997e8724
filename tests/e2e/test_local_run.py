"""`hyft run examples/local-tiny.yaml --local` end to end: the same resource file,
the same pod rendering, two local processes, real DeepSpeed ZeRO-3 + CPU offload."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.helpers import ROOT

EXAMPLE = ROOT / "examples" / "local-tiny.yaml"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from hyft_trainer.tiny import build

    folder = tmp_path_factory.mktemp("models")
    build(folder / "tiny-small", "small")
    return folder


def start(models, work, log, resource=EXAMPLE):
    cmd = [sys.executable, "-m", "hyft_operator.cli", "run", str(resource), "--local",
           "--volume", f"models={models}", "--volume", f"data={ROOT / 'examples' / 'data'}",
           "--volume", f"work={work}", "--workdir", str(work / "rendered")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def test_local_run_trains_to_completion(models, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        assert start(models, tmp_path, log).wait(600) == 0, log_path.read_text()[-4000:]
    text = log_path.read_text()
    assert "[local-tiny-master-0]" in text and "[local-tiny-worker-0]" in text  # logs prefixed per pod
    progress = [line for line in text.splitlines() if line.startswith("[progress] step")]
    assert progress, "the master's metrics endpoint was not served during the run"
    out = tmp_path / "local-tiny"
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 30 and report["world_size"] == 2
    assert (out / "loss.png").stat().st_size > 1000
    assert f"[hyft] loss curve: {out / 'loss.png'}" in text
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(models / "tiny-small"), out / "export")
    assert any("lora_B" in n for n, _ in model.named_parameters())


def variant(tmp_path, name, **training):
    """The example with other step counts (a fast machine finishes 30 steps before a signal lands)."""
    resource = yaml.safe_load(EXAMPLE.read_text())
    resource["spec"]["training"].update(training)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(resource))
    return path


def test_sigterm_leaves_a_resumable_checkpoint(models, tmp_path):
    from hyft_trainer.checkpoints import newest_complete, step_of

    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        proc = start(models, tmp_path, log, variant(tmp_path, "long.yaml", maxSteps=100000))
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            steps = [int(line.split()[2].split("/")[0]) for line in log_path.read_text().splitlines()
                     if line.startswith("[progress] step")]
            if steps and steps[-1] >= 12:  # past the first periodic checkpoint (saveSteps 10)
                break
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(300) == 0, log_path.read_text()[-4000:]
    assert "stopped; checkpoints in" in log_path.read_text()
    out = tmp_path / "local-tiny"
    checkpoint = newest_complete(out)
    assert checkpoint is not None and step_of(checkpoint) >= 12 and not (out / "report.json").exists()

    k = step_of(checkpoint)
    with open(tmp_path / "second.log", "w") as log:
        assert start(models, tmp_path, log, variant(tmp_path, "finish.yaml", maxSteps=k + 4)).wait(600) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["resumed_from"] == str(checkpoint) and report["steps"] == k + 4
