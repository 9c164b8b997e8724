#!/usr/bin/env bash
# LLaMA-Factory 0.9.5 in its own venv (its pins clash with hyft's): torch first,
# pinned through a constraints file for everything after, with the matching
# torchvision/torchaudio (a mismatched build breaks `import transformers`), and
# hyft's own DeepSpeed pin, so the training benchmark runs the same engine on both sides.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${1:-${HYFT_CACHE:-$HOME/.cache/hyft}/llamafactory-venv}
deepspeed=$(python3 -c "import re, sys; print(re.search(r'\"(deepspeed==[^\"]+)\"', open(sys.argv[1]).read()).group(1))" \
  "$here/../pyproject.toml")
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import llamafactory, deepspeed" 2>/dev/null; then
  exit 0
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
constraints=$(mktemp)
printf 'torch==2.11.0\ntorchvision==0.26.0\ntorchaudio==2.11.0\n' > "$constraints"
"$venv/bin/pip" install -q -c "$constraints" torch torchvision torchaudio
"$venv/bin/pip" install -q -c "$constraints" llamafactory==0.9.5 "$deepspeed" ninja
rm -f "$constraints"
"$venv/bin/python" -c "import llamafactory, deepspeed; print('llamafactory', llamafactory.__version__, 'deepspeed', deepspeed.__version__)"
