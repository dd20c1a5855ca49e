#!/usr/bin/env bash
# Faults of the services underneath: card payments at a steady rate while Postgres is stopped
# (~10 s, `pg_ctl stop -m fast`) and started again, and later while Redis is stopped (~30 s).
# `evisa serve`, `evisa work` and `evisa sandbox` run as processes of their own against a private
# Postgres (initdb into a temporary directory, another port) and a private Redis, so the machine's
# own services and other tests are never touched.
#
#   EVISA_BIN=path/to/evisa bash scripts/faults.sh
#
# Passes when: no process exits; every answer is 2xx or 503 problem+json (never a 5xx of another
# kind, never a hang beyond 10 s); /readyz is 503 naming the service that is down and 200 again
# after; every payment accepted reaches a final status within 60 s of the load stopping, with
# exactly one charge at the gateway per succeeded payment, and the event streams followed show
# it; no job is left unfinished or dead, no webhook unprocessed or missing from the inbox, and
# every payment's event log is complete. The load and its own checks are scripts/faults.py.
#
# Environment: EVISA_BIN, EVISA_PYTHON (with requests), PG_BIN (initdb, pg_ctl; default
# /usr/lib/postgresql/15/bin), FAULTS_RATE (payments/s, 20), FAULTS_PG_DOWN_SECONDS (10),
# FAULTS_REDIS_DOWN_SECONDS (30), FAULTS_STEADY_SECONDS (load before, between and after the faults, 6),
# FAULTS_KEEP=1 keeps the work directory (logs) after the run.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
EVISA_BIN=${EVISA_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/evisa/target}/debug/evisa}
if [ ! -x "$EVISA_BIN" ]; then
  cargo build --locked --bin evisa
fi
PYTHON=${EVISA_PYTHON:-$HOME/.cache/evisa/venv/bin/python}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
RATE=${FAULTS_RATE:-20}
PG_DOWN=${FAULTS_PG_DOWN_SECONDS:-10}
REDIS_DOWN=${FAULTS_REDIS_DOWN_SECONDS:-30}
STEADY=${FAULTS_STEADY_SECONDS:-6}

say() { printf 'faults: %s\n' "$*"; }
failures=0
check() { # check ok|other "line": one line per check, counted when it is not ok
  if [ "$1" = ok ]; then say "ok   $2"; else say "FAIL $2"; failures=$((failures + 1)); fi
}
die() { say "FAIL $*"; exit 1; }

"$PYTHON" -c 'import requests' 2>/dev/null ||
  die "$PYTHON cannot import requests (set EVISA_PYTHON; scripts/test.sh makes the venv)"
[ -x "$PG_BIN/initdb" ] || die "no initdb in $PG_BIN (set PG_BIN)"
command -v redis-server >/dev/null || die "redis-server is not installed"

# initdb refuses to run as root: then the private cluster belongs to an unprivileged user.
if [ "$(id -u)" = 0 ]; then
  PG_OS_USER=${FAULTS_PG_OS_USER:-$(id -u postgres >/dev/null 2>&1 && echo postgres || echo nobody)}
  as_pg() { setpriv --reuid="$PG_OS_USER" --regid="$(id -g "$PG_OS_USER")" --clear-groups -- "$@"; }
else
  as_pg() { "$@"; }
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

work=$(mktemp -d "${TMPDIR:-/tmp}/evisa-faults.XXXXXX")
chmod 0711 "$work"
pgdata=$work/pg
mkdir -p "$pgdata" "$work/redis"
[ "$(id -u)" = 0 ] && chown "$PG_OS_USER" "$pgdata"

pids=()          # every process this script started, stopped on exit
redis_pid=""
load_pid=""
cleanup() {
  local rc=$?
  set +e
  [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  [ -n "$redis_pid" ] && kill -TERM "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  [ -f "$pgdata/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$pgdata" -m immediate -w stop >/dev/null 2>&1
  if [ "$rc" -ne 0 ]; then
    for log in serve work sandbox; do
      [ -s "$work/$log.log" ] || continue
      printf '\n== last lines of evisa %s\n' "$log" >&2
      grep -v '"level":"INFO","message":"request finished"' "$work/$log.log" | tail -n 8 | cut -c1-300 >&2
    done
  fi
  if [ "${FAULTS_KEEP:-}" = 1 ]; then say "logs kept in $work"; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PG_PORT=$(free_port)
REDIS_PORT=$(free_port)
API_PORT=$(free_port)
SANDBOX_PORT=$(free_port)
BASE=http://127.0.0.1:$API_PORT
SANDBOX=http://127.0.0.1:$SANDBOX_PORT

# --- Postgres and Redis of our own --------------------------------------------------------------
as_pg "$PG_BIN/initdb" -D "$pgdata" -U postgres --auth=trust -E UTF8 >"$work/initdb.log" 2>&1 ||
  { cat "$work/initdb.log" >&2; die "initdb failed"; }
pg_start() {
  as_pg "$PG_BIN/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -t 30 \
    -o "-p $PG_PORT -k $pgdata -c listen_addresses=127.0.0.1" start >/dev/null
}
pg_stop() { as_pg "$PG_BIN/pg_ctl" -D "$pgdata" -m fast -w -t 30 stop >/dev/null; }
pg_start
PSQL=(psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE evisa_faults" >/dev/null
PSQL+=(-d evisa_faults)

redis_start() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    --dir "$work/redis" >>"$work/redis.log" 2>&1 &
  redis_pid=$!
  for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "Redis did not start on port $REDIS_PORT"
}
redis_stop() {
  kill -TERM "$redis_pid"
  wait "$redis_pid" 2>/dev/null || true
  redis_pid=""
}
redis_start
say "private Postgres on 127.0.0.1:$PG_PORT, Redis on 127.0.0.1:$REDIS_PORT"

# --- the service -----------------------------------------------------------------------------
# Fresh secrets every run: serve and work refuse published or guessable ones.
rand() { openssl rand -base64 32 | tr -d '/+=\n'; }
LOGIN=evisa_faults_app
DB_PASSWORD=$(rand)
OWNER_URL=postgres://postgres@127.0.0.1:$PG_PORT/evisa_faults
DATABASE_URL=$OWNER_URL EVISA_SERVICE_DB_PASSWORD=$DB_PASSWORD \
  "$EVISA_BIN" migrate --seed-demo-fees --service-login "$LOGIN" >"$work/migrate.log" 2>&1 ||
  { cat "$work/migrate.log" >&2; die "evisa migrate failed"; }
service_env=(
  DATABASE_URL="postgres://$LOGIN:$DB_PASSWORD@127.0.0.1:$PG_PORT/evisa_faults"
  REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
  EVISA_REDIS_PREFIX="faults-$(openssl rand -hex 6)"
  EVISA_HTTP_ADDR="127.0.0.1:$API_PORT"
  EVISA_PUBLIC_BASE_URL="$BASE/"
  EVISA_SANDBOX_ADDR="127.0.0.1:$SANDBOX_PORT"
  STRIPE_API_BASE="$SANDBOX"
  STRIPE_SECRET_KEY="sk_test_$(openssl rand -hex 24)"
  STRIPE_WEBHOOK_SECRETS="whsec_$(openssl rand -hex 24)"
  EVISA_JWT_SECRET="$(openssl rand -base64 32)"
  EVISA_RECEIPT_KEY="$(openssl rand -base64 32)"
  EVISA_DATA_KEYS="$("$EVISA_BIN" keys generate --id k1)"
  # One client address makes all the load: no limit of its own must get in the way.
  EVISA_PAYMENTS_PER_MINUTE=1000000
  EVISA_CALLBACKS_PER_MINUTE=1000000
  EVISA_REGISTRATIONS_PER_HOUR=1000
  EVISA_LOGIN_ATTEMPTS_PER_MINUTE=1000
  EVISA_EVENT_STREAMS_PER_APPLICANT=1000
  EVISA_LOG_FORMAT=json
  NO_COLOR=1
)
start() { # start NAME: evisa NAME in the background, its PID in pid_NAME
  env "${service_env[@]}" "$EVISA_BIN" "$1" >"$work/$1.log" 2>&1 &
  pids+=($!)
  printf -v "pid_$1" '%s' "$!"
}
start sandbox
start serve
start work

declare -A exit_status=()
alive() { # alive LABEL: every service process is still the one started
  local dead=""
  for name in sandbox serve work; do
    local var=pid_$name rc=0
    if ! kill -0 "${!var}" 2>/dev/null; then
      if [ -z "${exit_status[$name]:-}" ]; then
        wait "${!var}" 2>/dev/null || rc=$?
        exit_status[$name]=$rc
      fi
      dead="$dead $name (exit status ${exit_status[$name]}; last log line: $(grep -v '"message":"request finished"' "$work/$name.log" | tail -n 1 | cut -c1-160))"
    fi
  done
  if [ -z "$dead" ]; then
    check ok "$1: serve, work and sandbox still running (PIDs $pid_serve, $pid_work, $pid_sandbox)"
  else
    check fail "$1: exited:$dead"
  fi
}

# readyz: prints the status code, and `postgres`/`redis` when the problem names them.
readyz() {
  local code
  code=$(curl -s -m 5 -o "$work/readyz.json" -w '%{http_code}' "$BASE/readyz" 2>/dev/null) || true
  local named=""
  grep -q '"field":"postgres"' "$work/readyz.json" 2>/dev/null && named="$named postgres"
  grep -q '"field":"redis"' "$work/readyz.json" 2>/dev/null && named="$named redis"
  rm -f "$work/readyz.json"
  echo "$code$named"
}
# wait_ready SECONDS: until /readyz is 200; prints how long it took, or fails.
wait_ready() {
  local from=$SECONDS answer
  while :; do
    answer=$(readyz)
    [ "$answer" = 200 ] && { echo $((SECONDS - from)); return 0; }
    ((SECONDS - from >= $1)) && { echo "never (last: $answer)"; return 1; }
    sleep 0.5
  done
}
# wait_down SERVICE SECONDS: until /readyz is 503 naming SERVICE; prints the answer it got.
wait_down() {
  local from=$SECONDS answer
  while :; do
    answer=$(readyz)
    case $answer in 503*"$1"*) echo "$answer"; return 0 ;; esac
    ((SECONDS - from >= $2)) && { echo "$answer"; return 1; }
    sleep 0.5
  done
}

took=$(wait_ready 60) || die "the service did not become ready within 60 s"
say "evisa sandbox, serve and work up ($BASE), ready in ${took} s"

# --- the load, and the faults under it ----------------------------------------------------------
phase() { echo "$1" >"$work/phase"; }
phase setup
# Applications for the load as planned (the faults, the steady spells, a little recovery); when
# recovery takes longer, the payers make the rest themselves.
count=$(((STEADY * 3 + PG_DOWN + REDIS_DOWN + 10) * RATE))
"$PYTHON" scripts/faults.py --base "$BASE" --sandbox "$SANDBOX" --workdir "$work" \
  --rate "$RATE" --count "$count" &
load_pid=$!
for _ in $(seq 1 240); do
  [ -e "$work/ready" ] && break
  kill -0 "$load_pid" 2>/dev/null || die "the load generator stopped while preparing"
  sleep 0.5
done
[ -e "$work/ready" ] || die "the load generator did not prepare $count applications within 120 s"

phase steady
load_started=$SECONDS
sleep "$STEADY"

phase postgres-down
say "stopping Postgres for ${PG_DOWN} s under ${RATE} payments/s"
down_at=$SECONDS
pg_stop
if answer=$(wait_down postgres "$PG_DOWN"); then
  check ok "/readyz while Postgres is down: $answer"
else
  check fail "/readyz while Postgres is down: '$answer', expected 503 naming postgres"
fi
sleep $((PG_DOWN - (SECONDS - down_at) > 0 ? PG_DOWN - (SECONDS - down_at) : 0))
alive "Postgres down ${PG_DOWN} s"
pg_start
phase postgres-back
if took=$(wait_ready 30); then
  check ok "/readyz 200 again ${took} s after Postgres started"
else
  check fail "/readyz after Postgres started: $took"
fi

phase steady-2
sleep "$STEADY"

phase redis-down
say "stopping Redis for ${REDIS_DOWN} s under ${RATE} payments/s"
down_at=$SECONDS
redis_stop
if answer=$(wait_down redis "$REDIS_DOWN"); then
  check ok "/readyz while Redis is down: $answer"
else
  check fail "/readyz while Redis is down: '$answer', expected 503 naming redis"
fi
sleep $((REDIS_DOWN - (SECONDS - down_at) > 0 ? REDIS_DOWN - (SECONDS - down_at) : 0))
alive "Redis down ${REDIS_DOWN} s"
redis_start
phase redis-back
if took=$(wait_ready 30); then
  check ok "/readyz 200 again ${took} s after Redis started"
else
  check fail "/readyz after Redis started: $took"
fi

phase steady-3
sleep "$STEADY"
phase converge
touch "$work/stop"
say "load stopped after $((SECONDS - load_started)) s; waiting for every payment to finish"
load_rc=0
wait "$load_pid" || load_rc=$?
load_pid=""
[ -s "$work/result.json" ] || die "the load generator ended (status $load_rc) without a result"
failures=$((failures + $("$PYTHON" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["failures"]))' "$work/result.json")))
alive "after the load"

# --- what the database says ---------------------------------------------------------------------
# Give the workers a moment to acknowledge the last jobs and process the last webhooks.
sql() { "${PSQL[@]}" -c "$1"; }
settled=""
for _ in $(seq 1 30); do
  open=$(sql "SELECT (SELECT count(*) FROM jobs)
                   + (SELECT count(*) FROM gateway_inbox WHERE state = 'received')")
  [ "$open" = 0 ] && { settled=1; break; }
  sleep 0.5
done
[ -n "$settled" ] || say "jobs or webhooks still open 15 s after the load ended"

made=$(wc -l <"$work/payments.csv")
# One psql session: the load's view of every payment, compared with the tables.
compare=$("${PSQL[@]}" -F ' ' \
  -c "CREATE TEMP TABLE seen (id uuid, application_id uuid, status text)" \
  -c "\\copy seen FROM '$work/payments.csv' WITH (FORMAT csv)" \
  -c "CREATE TEMP TABLE sent (id text, kind text)" \
  -c "\\copy sent FROM '$work/events.csv' WITH (FORMAT csv)" \
  -c "SELECT (SELECT count(*) FROM payments),
             (SELECT count(*) FROM payments p WHERE NOT EXISTS (SELECT FROM seen s WHERE s.id = p.id)),
             (SELECT count(*) FROM seen s JOIN payments p USING (id) WHERE p.status <> s.status),
             (SELECT count(*) FROM applications a JOIN seen s ON s.application_id = a.id
               WHERE a.status <> 'paid'),
             (SELECT count(*) FROM sent WHERE kind IN ('payment_intent.succeeded',
                'payment_intent.payment_failed', 'payment_intent.canceled',
                'payment_intent.requires_action')
                AND NOT EXISTS (SELECT FROM gateway_inbox i WHERE i.provider = 'stripe' AND i.event_id = sent.id))")
read -r db_payments unknown changed unpaid missing_inbox <<<"$compare"
check "$([ "$db_payments" = "$made" ] && [ "$unknown" = 0 ] && echo ok)" \
  "the database holds exactly the payments the load was given: $db_payments rows, $made accepted, $unknown unknown to the load"
check "$([ "$changed" = 0 ] && [ "$unpaid" = 0 ] && echo ok)" \
  "payments and applications agree with what the API answered: $changed payments differ, $unpaid applications not paid"

# Unfinished jobs stay in `jobs` (dead ones too); each finished one is one row of `jobs_done`.
jobs=$(sql "SELECT coalesce(string_agg(queue || ' ' || state || ' ' || n, ', ' ORDER BY queue, state), 'none')
              FROM (SELECT queue, 'done' AS state, count(*) n FROM jobs_done GROUP BY 1
                    UNION ALL
                    SELECT queue, CASE WHEN dead_at IS NULL THEN 'open' ELSE 'dead' END, count(*)
                      FROM jobs GROUP BY 1, 2) j")
not_done=$(sql "SELECT count(*) FROM jobs")
charge_jobs=$(sql "SELECT count(*) FROM jobs_done WHERE queue = 'evisa.charge_card'")
check "$([ "$not_done" = 0 ] && [ "$charge_jobs" = "$db_payments" ] && echo ok)" \
  "every job finished, none dead or lost: $charge_jobs of $db_payments payments' charge jobs done; jobs: $jobs"
dead=$(DATABASE_URL=$OWNER_URL "$EVISA_BIN" jobs dead 2>&1 | wc -l)
check "$([ "$dead" = 0 ] && echo ok)" "evisa jobs dead lists $dead jobs"

inbox=$(sql "SELECT coalesce(string_agg(state || ' ' || n, ', ' ORDER BY state), 'none')
               FROM (SELECT state, count(*) n FROM gateway_inbox GROUP BY 1) i")
received=$(sql "SELECT count(*) FROM gateway_inbox WHERE state = 'received'")
check "$([ "$received" = 0 ] && [ "$missing_inbox" = 0 ] && echo ok)" \
  "every webhook is in the inbox and processed: $missing_inbox sent but missing, $received unprocessed; inbox: $inbox"

# Each card payment's log: created, processing, then its final status; each application paid once.
bad_logs=$(sql "SELECT count(*) FROM (
                  SELECT p.id, p.status, string_agg(e.to_status, ',' ORDER BY e.id) AS walk
                    FROM payments p LEFT JOIN payment_events e ON e.payment_id = p.id
                   GROUP BY p.id, p.status) w
                 WHERE walk IS DISTINCT FROM 'created,processing,' || status")
paid_twice=$(sql "SELECT count(*) FROM (SELECT application_id FROM application_events
                   WHERE to_status = 'paid' GROUP BY 1 HAVING count(*) <> 1) x")
sample=$(sql "SELECT coalesce(string_agg(walk, ' | '), '') FROM (
                SELECT string_agg(e.to_status, ',' ORDER BY e.id) AS walk
                  FROM payments p LEFT JOIN payment_events e ON e.payment_id = p.id
                 GROUP BY p.id, p.status
                HAVING string_agg(e.to_status, ',' ORDER BY e.id) IS DISTINCT FROM 'created,processing,' || p.status
                 LIMIT 3) w")
check "$([ "$bad_logs" = 0 ] && [ "$paid_twice" = 0 ] && echo ok)" \
  "every payment's events are complete (created, processing, final): $bad_logs incomplete${sample:+ ($sample)}, $paid_twice applications paid other than once"
if audit=$(DATABASE_URL=$OWNER_URL "$EVISA_BIN" audit verify 2>&1); then
  check ok "evisa audit verify: $(tail -n 1 <<<"$audit")"
else
  check fail "evisa audit verify: $(tail -n 3 <<<"$audit" | tr '\n' ' ')"
fi

# --- the processes' own account -----------------------------------------------------------------
panics=$(cat "$work/serve.log" "$work/work.log" | grep -c 'panicked' || true)
check "$([ "$panics" = 0 ] && echo ok)" "no panic in the serve and work logs: $panics"
errors=$("$PYTHON" - "$work/serve.log" <<'PY'
import collections, json, re, sys
seen = collections.Counter()
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        rec = json.loads(line)
    except ValueError:
        continue
    if rec.get("message") == "request finished" and int(rec.get("status", 0)) >= 500:
        span = rec.get("span", {})
        path = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "{id}", span.get("path", "?"))
        seen[f"{rec['status']} {span.get('method', '?')} {path}"] += 1
print(", ".join(f"{k}: {v}" for k, v in seen.most_common(8)) or "none")
PY
)
say "     5xx answers in the serve log, the sandbox's webhooks included: $errors"

read -r r_made r_converged r_charges r_503 r_other r_hangs <<<"$("$PYTHON" -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(r["payments"], r["converged"], r["charges"], r["unavailable_503"], r["other"], r["hangs"])' "$work/result.json")"
say "payments made $r_made, converged $r_converged, charges $r_charges, 503s $r_503, other $r_other, hangs $r_hangs; $((SECONDS - load_started)) s of load and checks, $(($(date +%s) - started)) s in all"
if [ "$failures" -gt 0 ]; then
  say "$failures checks failed"
  exit 1
fi
say "all checks passed"
