#!/usr/bin/env bash
# Install pyproject.toml's gptq extra with a venv's pip (.ci/venv.sh, the trainer image): gptqmodel apart,
# without build isolation (its build imports torch) or its requirements (an exact numpy pin; those it imports
# are in the extra), with BUILD_CUDA_EXT=0 (its torch kernel, on CPU, and Triton's, on GPU: no nvcc needed).
set -euo pipefail
pip=${1:?usage: install-gptq.sh VENV_PIP PYPROJECT_TOML}
pyproject=${2:?usage: install-gptq.sh VENV_PIP PYPROJECT_TOML}
gptq=$("$(dirname "$pip")/python" -c 'import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["gptq"]))' "$pyproject")
# shellcheck disable=SC2046  # one requirement per word
"$pip" install -q --no-cache-dir "setuptools>=77" $(grep -v '^gptqmodel' <<< "$gptq")
# shellcheck disable=SC2046
BUILD_CUDA_EXT=0 "$pip" install -q --no-cache-dir --no-deps --no-build-isolation $(grep '^gptqmodel' <<< "$gptq")
