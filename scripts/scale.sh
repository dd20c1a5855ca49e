#!/usr/bin/env bash
# Scale-out behind a real load balancer: API and worker processes keep no state of their own
# (Postgres holds the truth and the queue), so any number of them can run side by side. This starts
# `evisa sandbox`, two `evisa serve` and two `evisa work` over one database, puts HAProxy round-robin
# in front of the two APIs, and shows through it that payments succeed; that an event stream on one
# API sees `succeeded` for a payment made on the other; that a worker SIGKILLed in mid-load loses
# nothing and charges nothing twice (the sandbox's ledger); that the balancer keeps serving when an
# API stops. It prints payments/s with 1+1 and 2+2 processes (a figure of this machine, not a target).
#
#   EVISA_BIN=target/debug/evisa bash scripts/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
started_at=$(date +%s)

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/evisa/target}
BIN=${EVISA_BIN:-$CARGO_TARGET_DIR/debug/evisa}
[ -x "$BIN" ] || cargo build --locked --bin evisa
PY=${EVISA_PYTHON:-$HOME/.cache/evisa/venv/bin/python}
[ -x "$PY" ] || PY=python3
"$PY" -c 'import requests' 2>/dev/null || { echo "scale: $PY lacks requests (scripts/test.sh makes the venv)" >&2; exit 1; }
SECONDS_PER_BENCH=${SCALE_BENCH_SECONDS:-5}

# The balancer is Debian's HAProxy, run below as our own process, never as the system service.
if ! command -v haproxy >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq haproxy >/dev/null
fi
bash scripts/services.sh >/dev/null

PG=postgres://postgres@127.0.0.1:5432
run=$(openssl rand -hex 6)
db=evisa_scale_$run
login=evisa_scale_$run
tmp=$(mktemp -d)
declare -A pid=()

cleanup() {
  local code=$?
  for name in "${!pid[@]}"; do kill "${pid[$name]}" 2>/dev/null || true; done
  for name in "${!pid[@]}"; do wait "${pid[$name]}" 2>/dev/null || true; done
  if [ "$code" != 0 ]; then
    for log in "$tmp"/*.log; do
      [ -s "$log" ] && { echo "--- last lines of $(basename "$log")"; tail -n 15 "$log"; }
    done
  fi
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null || true
  psql "$PG/postgres" -qc "DROP ROLE IF EXISTS $login" 2>/dev/null || true
  redis-cli --scan --pattern "scale-$run*" 2>/dev/null | xargs -r redis-cli del >/dev/null 2>&1 || true
  rm -rf "$tmp"
  echo "scale: $([ "$code" = 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - started_at )) s"
}
trap cleanup EXIT

read -r sandbox_port api_a_port api_b_port lb_port admin_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
LB=http://127.0.0.1:$lb_port
SANDBOX=http://127.0.0.1:$sandbox_port

# Fresh secrets: `serve` and `work` refuse published or guessable ones. Every process gets them
# from the environment; none is printed.
db_password=$(openssl rand -hex 24)
export DATABASE_URL=postgres://$login:$db_password@127.0.0.1:5432/$db
export REDIS_URL=redis://127.0.0.1:6379
export EVISA_REDIS_PREFIX=scale-$run
export EVISA_PUBLIC_BASE_URL=$LB/
EVISA_JWT_SECRET=$(openssl rand -base64 32)
EVISA_RECEIPT_KEY=$(openssl rand -base64 32)
EVISA_DATA_KEYS=$("$BIN" keys generate --id k1)
STRIPE_SECRET_KEY=sk_test_$(openssl rand -hex 24)
STRIPE_WEBHOOK_SECRETS=whsec_$(openssl rand -hex 24)
export EVISA_JWT_SECRET EVISA_RECEIPT_KEY EVISA_DATA_KEYS STRIPE_SECRET_KEY STRIPE_WEBHOOK_SECRETS
export STRIPE_API_BASE=$SANDBOX
export EVISA_SANDBOX_ADDR=127.0.0.1:$sandbox_port
export EVISA_LOG=warn
# Every load comes from 127.0.0.1, one "client": lift the per-address limits.
export EVISA_LOGIN_ATTEMPTS_PER_MINUTE=100000 EVISA_REGISTRATIONS_PER_HOUR=1000000
export EVISA_PAYMENTS_PER_MINUTE=1000000 EVISA_CALLBACKS_PER_MINUTE=1000000
export EVISA_EVENT_STREAMS_PER_APPLICANT=512
# A killed worker's jobs are taken over after this (the smallest allowed; the default is 30 s).
export EVISA_JOB_ORPHAN_TIMEOUT_SECONDS=3

psql "$PG/postgres" -qc "CREATE DATABASE $db"
DATABASE_URL=$PG/$db EVISA_SERVICE_DB_PASSWORD=$db_password \
  "$BIN" migrate --seed-demo-fees --service-login "$login" >"$tmp/migrate.log" 2>&1

start() {
  local name=$1; shift
  "$@" >"$tmp/$name.log" 2>&1 &
  pid[$name]=$!
}

wait_ready() {
  local name=$1 url=$2
  for _ in $(seq 1 240); do
    curl -fsS "$url/readyz" >/dev/null 2>&1 && return 0
    kill -0 "${pid[$name]}" 2>/dev/null || { echo "scale: FAIL $name exited before it was ready" >&2; exit 1; }
    sleep 0.25
  done
  echo "scale: FAIL $name not ready after 60 s" >&2
  exit 1
}

# HAProxy's runtime API, one command per connection.
admin() {
  exec 3<>"/dev/tcp/127.0.0.1/$admin_port"
  printf '%s\n' "$1" >&3
  cat <&3
  exec 3<&-
}

# UP, DOWN, MAINT... of one backend server, from `show stat` (CSV: pxname,svname,...; status 18th).
lb_status() { admin "show stat" | awk -F, -v s="$1" '$1 == "apis" && $2 == s { print $18 }'; }

# Responses a backend server gave so far (`show stat` column hrsp_2xx+hrsp_4xx).
lb_answers() {
  admin "show stat" | awk -F, -v s="$1" '
    NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i }
    $1 == "apis" && $2 == s { print $col["hrsp_2xx"] + $col["hrsp_4xx"] }'
}

wait_lb_status() {
  local server=$1 want=$2
  for _ in $(seq 1 80); do
    [ "$(lb_status "$server")" = "$want" ] && return 0
    sleep 0.25
  done
  echo "scale: FAIL the balancer does not see API $server $want (it says $(lb_status "$server"))" >&2
  exit 1
}

cat >"$tmp/haproxy.cfg" <<EOF
global
    maxconn 4096
    log stdout format raw local0 info
    stats socket ipv4@127.0.0.1:$admin_port level admin

defaults
    mode http
    log global
    # Only what went wrong (shown when the run fails), with its termination state.
    option httplog
    option dontlog-normal
    timeout connect 1s
    timeout client 60s
    # Event streams (plain responses that go on, not tunnels) send a keep-alive every 15 s.
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 10s
    # A request that found no server, or whose server closed the connection without answering
    # (an API shutting down), goes to another one. Payments carry an Idempotency-Key, so a
    # replayed POST cannot pay twice.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
    # A connection per request to the APIs: a stopping API closes its idle keep-alive
    # connections, and a request racing that close is one HAProxy cannot always send again.
    option http-server-close

frontend api
    bind 127.0.0.1:$lb_port
    default_backend apis

backend apis
    balance roundrobin
    # Only a POST with an Idempotency-Key is safe to send again after the server may have seen it.
    http-request disable-l7-retry if METH_POST !{ req.hdr(idempotency-key) -m found }
    option httpchk GET /readyz
    http-check expect status 200
    # /readyz gives Postgres and Redis 2 s; a loaded API must not be taken out for being slow.
    timeout check 3s
    default-server inter 500ms fastinter 250ms downinter 500ms rise 2 fall 2
    server a 127.0.0.1:$api_a_port check
    server b 127.0.0.1:$api_b_port check disabled
EOF
haproxy -c -q -f "$tmp/haproxy.cfg"

bench() {
  local label=$1 out
  out=$("$BIN" bench payments --base "$LB" --rate 0 --concurrency 16 --seconds "$SECONDS_PER_BENCH" 2>"$tmp/bench.err") \
    || { cat "$tmp/bench.err" >&2; echo "scale: FAIL bench $label" >&2; exit 1; }
  local rate failed
  rate=$(sed -nE 's/.* = ([0-9.]+) succeeded\/s.*/\1/p' <<<"$out")
  failed=$(sed -nE 's/^payments: [0-9]+ succeeded, ([0-9]+) failed.*/\1/p' <<<"$out")
  [ -n "$rate" ] || { echo "scale: FAIL cannot read the bench's figures: $out" >&2; exit 1; }
  echo "scale: $label processes: $rate payments/s   ($(head -n 1 <<<"$out" | cut -d' ' -f2-); $(sed -n 2p <<<"$out" | sed 's/POST -> succeeded on the event stream: //'))"
  [ "$failed" = 0 ] || { echo "scale: FAIL $failed payments failed in the $label bench" >&2; exit 1; }
}

echo "scale: HAProxy $(haproxy -v | sed -nE '1s/^HAProxy version ([^ ]+).*/\1/p'), $(nproc) cores, binary $BIN"
start sandbox "$BIN" sandbox
start api-a env EVISA_HTTP_ADDR="127.0.0.1:$api_a_port" "$BIN" serve
start work-1 "$BIN" work
start haproxy haproxy -db -f "$tmp/haproxy.cfg"
wait_ready api-a "http://127.0.0.1:$api_a_port"
wait_lb_status a UP
bench "1+1"

start api-b env EVISA_HTTP_ADDR="127.0.0.1:$api_b_port" "$BIN" serve
start work-2 "$BIN" work
wait_ready api-b "http://127.0.0.1:$api_b_port"
admin "enable server apis/b" >/dev/null
wait_lb_status b UP
read -r a0 b0 < <(echo "$(lb_answers a) $(lb_answers b)")
bench "2+2"
read -r a1 b1 < <(echo "$(lb_answers a) $(lb_answers b)")
spread="$((a1 - a0)) answers from API a, $((b1 - b0)) from API b"
# Round robin per request: each API takes about half; under a quarter is far outside chance.
if [ $((4 * (a1 - a0))) -lt $((a1 - a0 + b1 - b0)) ] || [ $((4 * (b1 - b0))) -lt $((a1 - a0 + b1 - b0)) ]; then
  echo "scale: FAIL the balancer did not spread the 2+2 bench: $spread" >&2
  exit 1
fi
echo "scale: ok   round robin during the 2+2 bench: $spread"

"$PY" scripts/scale.py stream --a "http://127.0.0.1:$api_a_port" --b "http://127.0.0.1:$api_b_port" --sandbox "$SANDBOX"

# Disowned: the shell would otherwise announce the kill.
disown "${pid[work-1]}"
"$PY" scripts/scale.py load --base "$LB" --sandbox "$SANDBOX" --what "worker 1 SIGKILLed" \
  --seconds 10 --payers 8 --latency-ms 300 --pid "${pid[work-1]}" --signal KILL --after 4
unset 'pid[work-1]'
taken_over=$(psql "$PG/$db" -Atc "SELECT coalesce(string_agg(queue || ' ' || n, ', '), 'none') FROM
  (SELECT queue, count(*) AS n FROM jobs_done WHERE attempts > 1 GROUP BY 1 ORDER BY 1) j")
[ "$taken_over" != none ] || { echo "scale: FAIL no job of the killed worker was taken over: the kill hit nothing" >&2; exit 1; }
echo "scale: ok   jobs run again after the kill (taken over from worker 1 after EVISA_JOB_ORPHAN_TIMEOUT_SECONDS=$EVISA_JOB_ORPHAN_TIMEOUT_SECONDS): $taken_over"

# Stopped with SIGTERM and nothing said to the balancer: `serve` drains first
# (EVISA_SHUTDOWN_DRAIN_SECONDS, /readyz at 503 while it keeps serving), so HAProxy's health check
# takes it out before any connection closes, and no request may fail.
"$PY" scripts/scale.py load --base "$LB" --sandbox "$SANDBOX" --what "API b SIGTERMed" \
  --seconds 8 --payers 8 --pid "${pid[api-b]}" --signal TERM --after 3
wait "${pid[api-b]}" 2>/dev/null || true
unset 'pid[api-b]'
wait_lb_status b DOWN
echo "scale: ok   the balancer has API b DOWN and API a $(lb_status a)"

# The whole run, every payment of every phase, against the sandbox's ledger.
psql "$PG/$db" -Atc "SELECT id, status FROM payments" >"$tmp/payments.txt"
"$PY" scripts/scale.py ledger --sandbox "$SANDBOX" --payments "$tmp/payments.txt"
