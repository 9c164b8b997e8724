# The hyft trainer: CUDA runtime, torch, DeepSpeed (CPU-Adam op prebuilt), transformers, peft.
# Build from the repository root: docker build -f docker/trainer.Dockerfile -t hyft-trainer .
#
# torch 2.11.0 from PyPI is built for CUDA 13.0 (it brings its own CUDA libraries as
# wheels); the base matches it, so GPU nodes need an NVIDIA driver >= 580. A test
# keeps this tag's CUDA version equal to the pinned torch's.
FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    TORCH_EXTENSIONS_DIR=/opt/torch-extensions HF_HOME=/tmp/hf
# A C++ compiler stays in the image: DeepSpeed compiles its CPU ops on first use when
# the prebuilt ones do not apply (on CPU-only nodes, where its accelerator is "cpu").
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12=3.12.3-1ubuntu0.* python3.12-venv=3.12.3-1ubuntu0.* \
       python3.12-dev=3.12.3-1ubuntu0.* build-essential=12.10ubuntu1 ninja-build=1.11.1-2 \
    && rm -rf /var/lib/apt/lists/* \
    && python3.12 -m venv /opt/venv
WORKDIR /opt/hyft
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY trainer ./trainer
COPY envtest ./envtest
# DeepSpeed's setup.py imports torch to prebuild CPU-Adam, so it is built after torch and
# without build isolation (an isolated build has no torch and fails). DS_ACCELERATOR=cuda:
# the build machine has no GPU, and ops prebuilt for another accelerator are rebuilt at
# run time. Ubuntu 24.04 images come with a user "ubuntu" holding uid 1000, the uid the
# operator runs trainer pods as. (DL3013: the versions are pinned in pyproject.toml.)
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "torch==2.11.0" "setuptools==80.9.0" \
    && DS_ACCELERATOR=cuda DS_BUILD_CPU_ADAM=1 pip install --no-cache-dir --no-build-isolation "deepspeed==0.19.8" \
    && pip install --no-cache-dir ".[trainer]" \
    && (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --uid 1000 --create-home --shell /usr/sbin/nologin hyft \
    && mkdir -p /opt/torch-extensions && chown hyft /opt/torch-extensions

USER 1000
ENTRYPOINT ["hyft"]
CMD ["train", "/etc/hyft/train.yaml"]
