#!/usr/bin/env bash
# Generates the Python and TypeScript clients from openapi/openapi.json and proves both against a
# freshly started server.
#
#   bash scripts/clients.sh
#
# Needs: python3.11 (with venv), Node 20 + npm, Postgres on 127.0.0.1:5432 (trust auth for
# `postgres`), Redis on its standard port, and a built server binary.
#
# Environment:
#   EVISA_BIN          the server binary (default ${CARGO_TARGET_DIR:-target}/debug/evisa)
#   EVISA_CACHE        where the Python venv lives (default $HOME/.cache/evisa)
#   PYTHON             the interpreter that creates the venv (default python3.11, else python3)
#   PGHOST/PGPORT/PGUSER  where the throw-away database is dropped (default 127.0.0.1:5432, postgres)
#   EVISA_SMOKE_STRICT=0  warn (rather than fail) when a response contradicts the OpenAPI document
#
# Prints each smoke's output, then `<n> passed, <m> failed`; exits non-zero if any failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SPEC=openapi/openapi.json
CACHE=${EVISA_CACHE:-$HOME/.cache/evisa}
VENV=$CACHE/venv
PY_DIR=clients/python
TS_DIR=clients/typescript
EVISA_BIN=${EVISA_BIN:-${CARGO_TARGET_DIR:-target}/debug/evisa}
PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
PGUSER=${PGUSER:-postgres}
export PGHOST PGPORT PGUSER

say() { printf '==> %s\n' "$*"; }
warn() { printf 'clients.sh: %s\n' "$*" >&2; }

# Bash ignores `set -e` inside a function called from an `if`; steps below chain `|| return 1`.

# ---------------------------------------------------------------------------------------------
# Tools

install_python() {
  local python=${PYTHON:-}
  if [[ -z $python ]]; then
    if command -v python3.11 >/dev/null; then python=python3.11; else python=python3; fi
  fi
  if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    say "creating the Python venv at $VENV"
    rm -rf "$VENV"
    mkdir -p "$CACHE" || return 1
    "$python" -m venv "$VENV" || return 1
  fi
  local want have
  want=$(cat "$PY_DIR/requirements.txt" "$VENV/pyvenv.cfg" | sha256sum | cut -d' ' -f1) || return 1
  have=$(cat "$VENV/.evisa-requirements.sha256" 2>/dev/null || true)
  if [[ $want == "$have" ]] && "$VENV/bin/python" -m pip show -q openapi-python-client >/dev/null 2>&1; then
    say "Python tools already installed ($VENV)"
  else
    say "installing $PY_DIR/requirements.txt into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
      -r "$PY_DIR/requirements.txt" || return 1
    printf '%s\n' "$want" >"$VENV/.evisa-requirements.sha256"
  fi
}

install_node() {
  local want have
  want=$(cat "$TS_DIR/package-lock.json" | sha256sum | cut -d' ' -f1) || return 1
  have=$(cat "$TS_DIR/node_modules/.evisa-lock.sha256" 2>/dev/null || true)
  if [[ $want == "$have" ]]; then
    say "Node tools already installed ($TS_DIR/node_modules matches package-lock.json)"
  else
    say "npm ci in $TS_DIR"
    (cd "$TS_DIR" && npm ci --no-audit --no-fund) || return 1
    printf '%s\n' "$want" >"$TS_DIR/node_modules/.evisa-lock.sha256"
  fi
}

# ---------------------------------------------------------------------------------------------
# Generation (and, for TypeScript, the strict type check)

generate_python() {
  say "generating the Python client ($PY_DIR/generated)"
  local out
  # The generator runs ruff over its output: put the venv's ruff on PATH.
  out=$(PATH="$VENV/bin:$PATH" "$VENV/bin/openapi-python-client" generate \
    --path "$SPEC" --output-path "$PY_DIR/generated" --overwrite 2>&1) || {
    printf '%s\n' "$out"
    warn "openapi-python-client failed"
    return 1
  }
  printf '%s\n' "$out"
  # It exits 0 even when it had to skip parts of the document; treat that as a failure.
  if grep -qiE 'warning|error' <<<"$out"; then
    warn "openapi-python-client reported problems with $SPEC (see above)"
    return 1
  fi
}

generate_typescript() {
  say "generating the TypeScript types ($TS_DIR/src/schema.d.ts)"
  (cd "$TS_DIR" && npx --no-install openapi-typescript "../../$SPEC" -o src/schema.d.ts) || {
    warn "openapi-typescript failed"
    return 1
  }
  say "type-checking and compiling $TS_DIR (tsc, strict)"
  rm -rf "$TS_DIR/dist"
  (cd "$TS_DIR" && npx --no-install tsc) || {
    warn "tsc failed"
    return 1
  }
}

# ---------------------------------------------------------------------------------------------
# Server

SERVER_PID=
SERVER_LOG=
DB_NAME=
REDIS_PREFIX=
LOG_SHOWN=0

show_server_log() {
  if [[ $LOG_SHOWN -eq 0 && -n $SERVER_LOG && -s $SERVER_LOG ]]; then
    printf '\n==> server log (%s)\n' "$SERVER_LOG" >&2
    cat "$SERVER_LOG" >&2
    printf '==> end of server log\n\n' >&2
  fi
  LOG_SHOWN=1
}

cleanup() {
  local rc=$?
  set +e
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in $(seq 1 100); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
  fi
  if [[ -n $DB_NAME ]]; then
    psql -X -q -v ON_ERROR_STOP=1 -d postgres \
      -c "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)" >/dev/null 2>&1 ||
      dropdb --if-exists "$DB_NAME" >/dev/null 2>&1 ||
      warn "could not drop the database $DB_NAME"
  fi
  if [[ -n $REDIS_PREFIX ]] && command -v redis-cli >/dev/null; then
    redis-cli --scan --pattern "$REDIS_PREFIX:*" 2>/dev/null | xargs -r redis-cli del >/dev/null 2>&1
  fi
  [[ $rc -ne 0 ]] && show_server_log
  [[ -n $SERVER_LOG ]] && rm -f "$SERVER_LOG"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Prints the HTTP status of GET $1, or 000 when nothing answers.
http_status() {
  python3 - "$1" <<'EOF'
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
EOF
}

start_server() {
  if [[ ! -x $EVISA_BIN ]]; then
    warn "no server binary at $EVISA_BIN (build it with cargo build, or set EVISA_BIN)"
    return 1
  fi
  local suffix port
  suffix=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n') || return 1
  port=$(free_port) || return 1
  DB_NAME=evisa_clients_$suffix
  REDIS_PREFIX=clients-$suffix
  SERVER_LOG=$(mktemp "${TMPDIR:-/tmp}/evisa-clients-server.XXXXXX")
  BASE_URL=http://127.0.0.1:$port
  say "starting $EVISA_BIN dev on $BASE_URL (database $DB_NAME, Redis prefix $REDIS_PREFIX)"
  EVISA_HTTP_ADDR=127.0.0.1:$port \
    DATABASE_URL=postgres://$PGUSER@$PGHOST:$PGPORT/$DB_NAME \
    EVISA_REDIS_PREFIX=$REDIS_PREFIX \
    NO_COLOR=1 \
    "$EVISA_BIN" dev >"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  local deadline=$((SECONDS + 60)) status
  while :; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      wait "$SERVER_PID" 2>/dev/null || true
      warn "the server exited before it was ready"
      return 1
    fi
    status=$(http_status "$BASE_URL/readyz")
    [[ $status == 200 ]] && break
    if ((SECONDS >= deadline)); then
      warn "GET /readyz did not answer 200 within 60 s (last: $status)"
      return 1
    fi
    sleep 0.5
  done
  say "server ready"
}

# ---------------------------------------------------------------------------------------------
# Main

passed=0
failed=0
py_ready=0
ts_ready=0

if install_python && generate_python; then py_ready=1; else warn "the Python client is not ready"; fi
if install_node && generate_typescript; then ts_ready=1; else warn "the TypeScript client is not ready"; fi

if ! start_server; then
  show_server_log
  echo "0 passed, 2 failed"
  exit 1
fi

say "python smoke"
if ((py_ready)) && EVISA_BASE_URL=$BASE_URL "$VENV/bin/python" "$PY_DIR/smoke.py"; then
  passed=$((passed + 1))
else
  ((py_ready)) || warn "python smoke not run: its client could not be installed or generated"
  failed=$((failed + 1))
fi

say "ts smoke"
if ((ts_ready)) && (cd "$TS_DIR" && EVISA_BASE_URL=$BASE_URL node dist/smoke.js); then
  passed=$((passed + 1))
else
  ((ts_ready)) || warn "ts smoke not run: its client could not be installed, generated or compiled"
  failed=$((failed + 1))
fi

((failed == 0)) || show_server_log
echo "$passed passed, $failed failed"
((failed == 0))
