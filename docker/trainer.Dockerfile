# The hyft trainer: CUDA runtime, torch, DeepSpeed (CPU-Adam op prebuilt), transformers, peft.
# Build from the repository root: docker build -f docker/trainer.Dockerfile -t hyft-trainer .
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    TORCH_EXTENSIONS_DIR=/opt/torch-extensions DS_BUILD_CPU_ADAM=1 HF_HOME=/tmp/hf
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
# DS_BUILD_CPU_ADAM=1: DeepSpeed compiles its CPU-Adam op now, not on every pod start.
# (DL3013: the versions are pinned in pyproject.toml, which this installs.)
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "torch==2.11.0" \
    && pip install --no-cache-dir ".[trainer]" \
    && useradd --uid 1000 --create-home --shell /usr/sbin/nologin hyft \
    && mkdir -p /opt/torch-extensions && chown hyft /opt/torch-extensions

USER 1000
ENTRYPOINT ["hyft"]
CMD ["train", "/etc/hyft/train.yaml"]
