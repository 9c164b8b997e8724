#!/usr/bin/env bash
# Create the shared virtualenv (outside the clone, so CI does not download torch on
# every run) and install hyft's dependencies into it when pyproject.toml changes.
# The project itself is installed as a plain copy; `make` and the tests put the
# checkout first on PYTHONPATH, so several checkouts can share one venv.
set -euo pipefail
venv=${1:?usage: venv.sh VENV}
here=$(cd "$(dirname "$0")/.." && pwd)
stamp="$venv/.hyft-installed"
want=$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing hyft[operator,trainer,dev] into $venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "$here[operator,trainer,dev]"
  bash "$here/docker/install-gptq.sh" "$venv/bin/pip" "$here/pyproject.toml"
  echo "$want" > "$stamp"
fi
