#!/usr/bin/env bash
# Runs Tandem's whole test suite on a fresh machine: a check that the
# committed web bundle is up to date, Rust unit and integration tests, then
# the end-to-end tests (stock y-websocket client and the browser editor in
# Chromium against the release binary), then a short smoke run of the load
# benchmark and of the soak, and schemathesis against the API's OpenAPI
# document. Installs what it needs (Node packages with `npm ci`, Debian's
# `chromium` with apt-get).
#
# The cargo target directory defaults to ~/.cache/tandem/target so that a
# fresh clone on the same machine reuses earlier builds; set
# CARGO_TARGET_DIR to use another.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tandem/target}"
mkdir -p "$CARGO_TARGET_DIR"

step() { printf '\n== %s\n' "$*"; }

# The binary embeds web/dist, which is committed: it must be what the sources
# in web/ build to.
step "web bundle (web/dist) up to date"
(cd web && npm ci --no-audit --no-fund --loglevel=error && npm run check)

# One release build serves both: `cargo test` builds the `tandem` binary for
# the integration tests, and the end-to-end tests use that same binary.
step "build (release, target dir: $CARGO_TARGET_DIR)"
cargo test --release --locked --workspace --no-run
export TANDEM_BIN="$CARGO_TARGET_DIR/release/tandem"

step "Rust unit and integration tests"
cargo test --release --locked --workspace

if [ -n "${TANDEM_TEST_POSTGRES_URL:-}" ]; then
  step "Rust integration tests again, on PostgreSQL (a fresh database per test)"
  TANDEM_TEST_BACKEND=postgres cargo test --release --locked -p tandem --test '*'
else
  step "Rust integration tests on PostgreSQL: skipped (TANDEM_TEST_POSTGRES_URL is not set)"
fi

# The browser tests drive Debian's chromium through playwright-core (which
# downloads no browser of its own).
if [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM_PATH:-}" ]; then
  step "install chromium (for the browser tests)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
fi

# tests/cluster.test.js runs three nodes on the PostgreSQL and Redis named by
# TANDEM_TEST_POSTGRES_URL and TANDEM_TEST_REDIS_URL (.ci/run exports both);
# without them those tests say they skipped.
step "end-to-end tests (stock y-websocket client, real binary)"
(cd e2e && npm ci --no-audit --no-fund --loglevel=error && npm test)

# schemathesis (pinned, in a venv under e2e/schema) against the release
# binary's own OpenAPI document, with an API key and in dev mode, inside a
# network namespace of its own.
# The whole suite again on PostgreSQL, but for the cluster files, which run
# on PostgreSQL (and Redis) in the pass above already.
if [ -n "${TANDEM_TEST_POSTGRES_URL:-}" ]; then
  step "end-to-end tests on PostgreSQL (each server a fresh database)"
  (cd e2e && TANDEM_E2E_BACKEND=postgres node --test --test-concurrency=1 --test-timeout=300000 \
    $(ls tests/*.test.js | grep -v '^tests/cluster'))
fi

step "the API against its OpenAPI document (schemathesis)"
e2e/schema/run.sh

if [ -f e2e/bench/package.json ]; then
  step "load benchmark: its own tests, then a smoke run (--quick)"
  (cd e2e/bench && npm ci --no-audit --no-fund --loglevel=error && npm test && npm run bench -- --quick)
  step "several nodes: fan-out across nodes and a join storm (--quick; skipped without the PostgreSQL and Redis URLs)"
  (cd e2e/bench && node tools/cluster-fanout.mjs --quick)
  step "soak: memory and fds back down after connections and rooms are gone (--quick)"
  (cd e2e/bench && node tools/soak.mjs --quick)
fi
if [ -f e2e/bench/tools/many-connections.mjs ]; then
  step "many connections on one node: 5,000 idle clients in 2,500 rooms, writers in 1% of them"
  (cd e2e/bench && node tools/many-connections.mjs --rooms 2500 --duration 5 --idle 3)
fi
