#!/usr/bin/env bash
# Checks the HTTP API against its own OpenAPI document (/api/openapi.json)
# with schemathesis, a property-based API tester: for every operation it
# sends generated requests, valid and invalid, and fails on any 5xx and on
# any response that the document does not describe (status code, content
# type, headers, body schema), or on invalid input that is accepted.
#
# It installs a pinned schemathesis into a Python venv ($SCHEMA_VENV,
# default e2e/schema/.venv), then, inside a network namespace of its own
# (`unshare --net`, only loopback up: the webhook endpoints it creates
# point at generated URLs, and the server must not send them anywhere),
# starts the release binary on a free port with a fresh SQLite file, once
# with an API key and once in dev mode (no key), and runs schemathesis
# against each. It exits non-zero on any failure.
#
# Environment:
#   TANDEM_BIN            the binary (default $CARGO_TARGET_DIR/release/tandem,
#                         else target/release/tandem)
#   SCHEMA_VENV           the venv (default e2e/schema/.venv)
#   SCHEMA_MODES          "api_key dev" (default), or one of them
#   SCHEMA_MAX_EXAMPLES   test cases per operation and phase (default 25)
#   SCHEMA_SEED           the random seed (default 16)
#   SCHEMA_REPORT_DIR     keep schemathesis' JUnit and NDJSON reports and the
#                         server logs there (default: a temp dir, removed)
#   SCHEMA_EXTRA_ARGS     more `schemathesis run` arguments (e.g. -m negative)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SCHEMATHESIS_VERSION="4.32.5"
SCHEMA_VENV="${SCHEMA_VENV:-$HERE/.venv}"
SCHEMA_MODES="${SCHEMA_MODES:-api_key dev}"
SCHEMA_MAX_EXAMPLES="${SCHEMA_MAX_EXAMPLES:-25}"
SCHEMA_SEED="${SCHEMA_SEED:-16}"
if [ -z "${TANDEM_BIN:-}" ]; then
  TANDEM_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tandem"
fi
export TANDEM_BIN SCHEMA_VENV SCHEMA_MODES SCHEMA_MAX_EXAMPLES SCHEMA_SEED

say() { printf 'schema: %s\n' "$*" >&2; }

# ---- outside the namespace: the venv (needs the package registry) --------
if [ -z "${SCHEMA_INNER:-}" ]; then
  if [ ! -x "$TANDEM_BIN" ]; then
    say "no binary at $TANDEM_BIN: build it (cargo build --release -p tandem) or set TANDEM_BIN"
    exit 2
  fi
  if [ "$("$SCHEMA_VENV/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
    say "installing schemathesis $SCHEMATHESIS_VERSION into $SCHEMA_VENV"
    python3 -m venv "$SCHEMA_VENV"
    "$SCHEMA_VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  fi
  if unshare --net true 2>/dev/null; then
    exec unshare --net -- env SCHEMA_INNER=netns bash "$0" "$@"
  fi
  say "WARNING: 'unshare --net' is not available here (it needs root or user namespaces),"
  say "so the server would reach the network: running WITHOUT the operations that create"
  say "or change webhook endpoints (POST /api/webhooks, PATCH /api/webhooks/{id}), so that"
  say "no endpoint exists and nothing is delivered. Run as root for the full check."
  exec env SCHEMA_INNER=nonet bash "$0" "$@"
fi

# ---- inside: loopback only ------------------------------------------------
if [ "$SCHEMA_INNER" = netns ]; then
  ip link set lo up
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tandem-schema.XXXXXX")"
REPORTS="${SCHEMA_REPORT_DIR:-$WORK/reports}"
mkdir -p "$REPORTS"
SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
cleanup() {
  stop_server
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts the server with a fresh database; sets SERVER_PID and BASE.
start_server() {
  local mode="$1" log="$REPORTS/server-$1.log"
  rm -f "$WORK/tandem-$mode.db"*
  local key_env=()
  if [ "$mode" = api_key ]; then key_env=(TANDEM_API_KEY="$API_KEY"); fi
  env -u TANDEM_API_KEY -u TANDEM_TOKEN_SECRET -u TANDEM_ALLOWED_ORIGINS \
    "${key_env[@]}" \
    TANDEM_BIND=127.0.0.1:0 \
    TANDEM_DATABASE_URL="sqlite://$WORK/tandem-$mode.db" \
    TANDEM_LOG_FORMAT=pretty RUST_LOG="${RUST_LOG:-info}" NO_COLOR=1 \
    TANDEM_WEBHOOK_TIMEOUT=2s \
    "$TANDEM_BIN" >"$log" 2>&1 &
  SERVER_PID=$!
  local port="" i
  for i in $(seq 1 200); do
    port="$(grep -oE 'listening on http://127\.0\.0\.1:[0-9]+' "$log" | head -n1 | grep -oE '[0-9]+$' || true)"
    if [ -n "$port" ]; then break; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if [ -z "$port" ]; then
    say "the server did not start; its log:"
    cat "$log" >&2
    exit 1
  fi
  BASE="http://127.0.0.1:$port"
}

API_KEY="schema-test-key-$$"
EXCLUDE=()
if [ "$SCHEMA_INNER" = nonet ]; then
  EXCLUDE=(--exclude-name 'POST /api/webhooks' --exclude-name 'PATCH /api/webhooks/{id}')
fi

status=0
for mode in $SCHEMA_MODES; do
  start_server "$mode"
  auth=()
  if [ "$mode" = api_key ]; then auth=(-H "Authorization: Bearer $API_KEY"); fi
  say "mode $mode: schemathesis $SCHEMATHESIS_VERSION against $BASE (seed $SCHEMA_SEED, at most $SCHEMA_MAX_EXAMPLES examples per operation)"
  started=$(date +%s)
  # shellcheck disable=SC2086
  if ! (cd "$WORK" && "$SCHEMA_VENV/bin/schemathesis" --no-color --config-file "$HERE/schemathesis.toml" \
      run "$BASE/api/openapi.json" \
      "${auth[@]}" "${EXCLUDE[@]}" \
      --checks all \
      --seed "$SCHEMA_SEED" --max-examples "$SCHEMA_MAX_EXAMPLES" \
      --generation-database none \
      --workers 1 --request-timeout 10 \
      --report junit,ndjson --report-dir "$REPORTS" \
      --report-junit-path "$REPORTS/junit-$mode.xml" --report-ndjson-path "$REPORTS/events-$mode.ndjson" \
      ${SCHEMA_EXTRA_ARGS:-}); then
    status=1
    say "mode $mode: FAILED (server log: last lines below)"
    tail -n 30 "$REPORTS/server-$mode.log" >&2
  fi
  say "mode $mode: $(( $(date +%s) - started )) s"
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    say "mode $mode: the server died during the run"
    status=1
  fi
  stop_server
done

if [ -n "${SCHEMA_REPORT_DIR:-}" ]; then say "reports and server logs: $REPORTS"; fi
if [ "$status" -ne 0 ]; then say "FAILED"; else say "passed"; fi
exit "$status"
