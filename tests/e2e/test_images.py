"""The images' build steps that can run without a container engine: the operator
image's whole install (the operator extra alone is enough: no torch on its import
path), and the trainer image's DeepSpeed step (CPU-Adam prebuilt for GPU nodes)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig

from tests.helpers import ROOT

DOCKERFILE = ROOT / "docker" / "operator.Dockerfile"
TRAINER_DOCKERFILE = ROOT / "docker" / "trainer.Dockerfile"


def run(cmd, **kwargs):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc.stdout


def test_operator_image_steps_install_and_run_without_torch(tmp_path):
    text = DOCKERFILE.read_text()
    context = tmp_path / "context"
    context.mkdir()
    for sources in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for source in sources.split():
            src = ROOT / source
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, context / source)
    install = re.search(r'pip install --no-cache-dir (".\[operator\]")', text)
    assert install, "the operator Dockerfile's pip install line changed: update this test"

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    run([venv / "bin" / "pip", "install", "-q", install.group(1).strip('"')], cwd=context)
    hyft = venv / "bin" / "hyft"
    clean_env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}  # not this checkout's PYTHONPATH
    assert "--peering" in run([hyft, "operator", "--help"], env=clean_env)  # the image's ENTRYPOINT + CMD
    assert "kind: CustomResourceDefinition" in run([hyft, "crd"], env=clean_env)
    assert "kind: Pod" in run([hyft, "render", ROOT / "examples" / "hunyuan-1.8b-lora.yaml"], env=clean_env)
    probe = "import sys, hyft_operator.handlers; print('torch' in sys.modules)"
    assert run([venv / "bin" / "python", "-c", probe], env=clean_env).strip() == "False"
    no_torch = subprocess.run([venv / "bin" / "python", "-c", "import torch"], capture_output=True, env=clean_env)
    assert no_torch.returncode != 0


def test_trainer_image_deepspeed_step_prebuilds_cpu_adam_for_gpu_nodes(tmp_path):
    """Its pip lines, run in a venv that sees this venv's torch (the image's pin, same
    wheel). Compiles CPU-Adam: about 3 minutes on 2 cores."""
    text = TRAINER_DOCKERFILE.read_text()
    setuptools = re.search(r'"(setuptools==[^"]+)"', text).group(1)
    step = re.search(r'&& ((?:DS_\w+=\S+ )+)pip install --no-cache-dir --no-build-isolation "(deepspeed==[^"]+)"',
                     text)
    assert step, "the trainer Dockerfile's DeepSpeed line changed: update this test"
    build_env = dict(pair.split("=") for pair in step.group(1).split())

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "image-torch.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch and deepspeed's deps
    run([venv / "bin" / "pip", "install", "-q", setuptools])
    run([venv / "bin" / "pip", "install", "-q", "--no-cache-dir", "--no-build-isolation", "--no-deps",
         "--ignore-installed", step.group(2)], env={**os.environ, **build_env}, cwd=tmp_path)
    probe = ("import deepspeed.git_version_info_installed as info, deepspeed; "
             f"print(deepspeed.__file__.startswith({str(site)!r}), info.accelerator_name, "
             "info.installed_ops['cpu_adam'])")
    last_line = run([venv / "bin" / "python", "-c", probe], cwd=tmp_path).strip().splitlines()[-1]  # after DS logs
    assert last_line.split() == ["True", "cuda", "1"]
    assert list(site.glob("deepspeed/ops/adam/cpu_adam_op*.so"))
