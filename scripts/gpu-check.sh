#!/usr/bin/env bash
# GPU check: a real worker trains xor on CUDA, is interrupted twice and resumes; timings against the CPU.
#   scripts/gpu-check.sh [--python PYTHON] [--device cuda|cpu] [--output FILE]
# PYTHON (or GPU_CHECK_PYTHON): an interpreter with app/requirements.txt, httpx and a CUDA build of
# torch. The default, .venv/bin/python (make setup), has the CPU build: only --device cpu works there.
# It also needs the PostgreSQL server binaries (/usr/lib/postgresql/*/bin, or PG_BIN).
# The work is done by scripts/gpu_check.py; the report is also written to artifacts/gpu-check.json.
set -euo pipefail
python=${GPU_CHECK_PYTHON:-}
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --python) python=${2:?--python needs a path}; shift 2 ;;
    --python=*) python=${1#--python=}; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
# A relative path means the caller's directory, not the repository's.
if [[ -n $python && $python == */* && $python != /* ]]; then
  python=$PWD/$python
fi
cd "$(dirname "$0")/.."
python=${python:-$PWD/.venv/bin/python}
if ! command -v "$python" >/dev/null; then
  echo "gpu-check: no Python at $python (run make setup, or pass --python / set GPU_CHECK_PYTHON)" >&2
  exit 2
fi
exec "$python" scripts/gpu_check.py "${args[@]}"
