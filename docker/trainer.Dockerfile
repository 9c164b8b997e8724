# The hyft trainer: torch (PyPI's wheel brings its CUDA libraries), DeepSpeed with
# CPU-Adam prebuilt for GPU nodes and its CPU ops prebuilt for CPU nodes, transformers, peft.
# Build from the repository root: `make images`, or
#   docker build --network host -f docker/trainer.Dockerfile -t hyft-trainer:<version> .  (make images: the version of pyproject.toml)
# torch 2.11.0 from PyPI is built for CUDA 13.0, so GPU nodes need an NVIDIA driver >= 580
# and the NVIDIA container toolkit (or the GPU operator), which reads the NVIDIA_* variables.
# DL3008: Debian stable's package versions move only for security fixes; take them.
FROM debian:bookworm-slim AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev g++ ninja-build \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /opt/hyft
# docker/pip-ca: a proxy's CA for pip, if the build machine needs one; this stage only.
COPY docker/pip-ca/ /tmp/pip-ca/
# DeepSpeed's setup.py imports torch to prebuild CPU-Adam, so it is built after torch and
# without build isolation (an isolated build has no torch and fails). DS_ACCELERATOR=cuda:
# the build machine has no GPU, and ops prebuilt for another accelerator are rebuilt at
# run time. Then the trainer's other dependencies, from pyproject.toml alone (empty
# packages and README), so that no code or docs change reinstalls them. (DL3013: pinned
# in pyproject.toml.)
# torch and DeepSpeed (gigabytes) come first, in a layer of their own: a change to the
# other dependencies in pyproject.toml then reinstalls only those.
# CXX: a g++ that builds for a documented x86-64 baseline, not the build machine's -march=native
# (docker/portable-g++); each compile line is kept in the image, for the record.
COPY docker/portable-g++ /usr/local/bin/hyft-portable-g++
ENV CXX=/usr/local/bin/hyft-portable-g++ HYFT_CXX_LOG=/opt/venv/share/hyft/cpu-ops-build.log
# hadolint ignore=DL3013
RUN if [ -f /tmp/pip-ca/build.crt ]; then export PIP_CERT=/tmp/pip-ca/build.crt; fi \
    && mkdir -p /opt/venv/share/hyft \
    && pip install --no-cache-dir "torch==2.11.0" "setuptools==80.9.0" \
    && DS_ACCELERATOR=cuda DS_BUILD_CPU_ADAM=1 pip install --no-cache-dir --no-build-isolation "deepspeed==0.19.8"
# Then the gptq extra (GPTQ-quantized bases), as docker/install-gptq.sh says.
COPY pyproject.toml ./
COPY docker/install-gptq.sh /tmp/install-gptq.sh
# hadolint ignore=DL3013
RUN if [ -f /tmp/pip-ca/build.crt ]; then export PIP_CERT=/tmp/pip-ca/build.crt; fi \
    && mkdir -p operator/hyft_operator trainer/hyft_trainer envtest/hyft_envtest && touch README.md \
    && pip install --no-cache-dir ".[trainer]" \
    && bash /tmp/install-gptq.sh /opt/venv/bin/pip pyproject.toml \
    && pip uninstall -y hyft

FROM debian:bookworm-slim
# A C++ compiler and ninja stay: DeepSpeed checks its JIT-built ops with them on load,
# and rebuilds them (for the same baseline) on a CPU node whose SIMD width differs.
# rdma-core's user-space libraries (libibverbs with its providers: mlx5, efa, ...; librdmacm):
# without them NCCL cannot use InfiniBand, RoCE or EFA and falls back to TCP sockets.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-dev g++ ninja-build \
       libibverbs1 ibverbs-providers librdmacm1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 1000 --create-home --shell /usr/sbin/nologin hyft
COPY --from=build /opt/venv /opt/venv
COPY docker/portable-g++ /usr/local/bin/hyft-portable-g++
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 TORCH_EXTENSIONS_DIR=/opt/torch-extensions HF_HOME=/tmp/hf \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility CXX=/usr/local/bin/hyft-portable-g++
# CPU nodes (tests, CI): DeepSpeed's accelerator there is "cpu", whose ops are built on
# first use (minutes per pod). Build them once here, where the pods look for them.
RUN HYFT_CXX_LOG=/opt/venv/share/hyft/cpu-ops-build.log python3 -c "from deepspeed.accelerator import \
get_accelerator as a; [a().create_op_builder(op).load() for op in ('CPUAdamBuilder', 'ShareMemCommBuilder')]" \
    && chown -R 1000:1000 /opt/torch-extensions
WORKDIR /opt/hyft
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY trainer ./trainer
# hyft_envtest (the test cluster) is part of the distribution but not of the images: an empty package.
RUN mkdir -p envtest/hyft_envtest \
    && pip install --no-cache-dir --no-deps --no-build-isolation --no-index . && rm -rf /opt/hyft/*
USER 1000
ENTRYPOINT ["hyft"]
CMD ["train", "/etc/hyft/train.yaml"]
