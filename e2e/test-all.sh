#!/usr/bin/env bash
# Runs Tandem's whole test suite on a fresh machine: Rust unit and
# integration tests, then the end-to-end tests (stock y-websocket client
# against the release binary), then a short smoke run of the load benchmark.
# Installs what it needs (Node packages with `npm ci`).
#
# The cargo target directory defaults to ~/.cache/tandem/target so that a
# fresh clone on the same machine reuses earlier builds; set
# CARGO_TARGET_DIR to use another.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tandem/target}"
mkdir -p "$CARGO_TARGET_DIR"

step() { printf '\n== %s\n' "$*"; }

# One release build serves both: `cargo test` builds the `tandem` binary for
# the integration tests, and the end-to-end tests use that same binary.
step "build (release, target dir: $CARGO_TARGET_DIR)"
cargo test --release --locked --workspace --no-run
export TANDEM_BIN="$CARGO_TARGET_DIR/release/tandem"

step "Rust unit and integration tests"
cargo test --release --locked --workspace

step "end-to-end tests (stock y-websocket client, real binary)"
(cd e2e && npm ci --no-audit --no-fund --loglevel=error && npm test)

if [ -f e2e/bench/package.json ]; then
  step "load benchmark smoke run (--quick)"
  (cd e2e/bench && npm ci --no-audit --no-fund --loglevel=error && npm run bench -- --quick)
fi
