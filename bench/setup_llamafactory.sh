#!/usr/bin/env bash
# LLaMA-Factory 0.9.5 in its own venv (its pins clash with hyft's): torch first,
# pinned through a constraints file for everything after, with the matching
# torchvision/torchaudio (a mismatched build breaks `import transformers`).
set -euo pipefail
venv=${1:-${HYFT_CACHE:-$HOME/.cache/hyft}/llamafactory-venv}
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import llamafactory" 2>/dev/null; then
  exit 0
fi
python3 -m venv "$venv"
constraints=$(mktemp)
printf 'torch==2.11.0\ntorchvision==0.26.0\ntorchaudio==2.11.0\n' > "$constraints"
"$venv/bin/pip" install -q -c "$constraints" torch torchvision torchaudio
"$venv/bin/pip" install -q -c "$constraints" llamafactory==0.9.5
"$venv/bin/python" -c "import llamafactory; print('llamafactory', llamafactory.__version__)"
