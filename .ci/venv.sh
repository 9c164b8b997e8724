#!/usr/bin/env bash
# Create the shared virtualenv if missing and (re)install this checkout into it
# when the checkout or its pyproject.toml changed. Kept outside the clone so
# that CI does not download torch on every run.
set -euo pipefail
venv=${1:?usage: venv.sh VENV}
here=$(cd "$(dirname "$0")/.." && pwd)
stamp="$venv/.hyft-installed"
want="$here $(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing hyft[operator,trainer,dev] into $venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -e "$here[operator,trainer,dev]"
  echo "$want" > "$stamp"
fi
