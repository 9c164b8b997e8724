"""The operator image's build steps, without a container engine: copy what its
Dockerfile COPYs, run its pip install in a fresh venv, then run the entrypoint.
Proves the operator extra alone is enough (no torch anywhere on its import path)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

from tests.helpers import ROOT

DOCKERFILE = ROOT / "docker" / "operator.Dockerfile"


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
