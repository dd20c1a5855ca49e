#!/usr/bin/env bash
# Benchmarks on this machine, printing figures beside their targets. The load generator runs on
# the same machine.
#
#   bash scripts/bench.sh [SECONDS]
#
# 1. Postgres's own TPC-B rate (pgbench, scale 10, 8 clients): the yardstick.
# 2. Card payments end to end through `evisa dev` (release; API + workers + sandbox in one
#    process): closed loop (capacity), offered 100/s, and offered half the capacity. Each prints
#    payments/s, POST -> `succeeded` latency, and per payment the commits (pg_stat_database),
#    statements (pg_stat_statements), Postgres CPU and service CPU (/proc), and the service's
#    peak RSS.
# 3. `evisa bench webhooks`: signed Stripe webhooks verified and stored per second.
# 4. `evisa bench jobs`: the job layer as `evisa work` configures it, no-op jobs/s, with an empty
#    history and beside 1,000,000 finished jobs.
#
# Postgres: by default a private server started for the run (initdb, stock settings, with the
# pg_stat_statements module loaded so statements can be counted); EVISA_BENCH_POSTGRES=system
# uses the one on 127.0.0.1:5432 instead (statements then print "n/a" unless it loads the
# module). Either way synchronous_commit stays on and no setting is tuned.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
bash scripts/services.sh >/dev/null
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/evisa/target}
cargo build --release --locked --bin evisa 2>&1 | tail -n 1
BIN=$CARGO_TARGET_DIR/release/evisa
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
run=$(date +%s)$$
bench_db=evisa_bench_$run
jobs_db=evisa_jobs_$run
pgbench_db=evisa_pgbench_$run
port=$(free_port)
sandbox_port=$(free_port)
server=""
pgdir=""

as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)

cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; fi
  if [ -n "$pgdir" ]; then
    as_postgres "$pg_bin/pg_ctl" -D "$pgdir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$pgdir"
  else
    for db in $bench_db $jobs_db $pgbench_db; do
      psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null || true
    done
  fi
}
trap cleanup EXIT

if [ "${EVISA_BENCH_POSTGRES:-own}" = own ] && [ -x "$pg_bin/initdb" ]; then
  pg_port=$(free_port)
  pgdir=$(mktemp -d /tmp/evisa-bench-pg.XXXXXX)
  chmod 755 "$pgdir"
  mkdir "$pgdir/data"
  [ "$(id -u)" = 0 ] && chown postgres "$pgdir" "$pgdir/data"
  as_postgres "$pg_bin/initdb" -D "$pgdir/data" -U postgres --auth=trust >/dev/null
  as_postgres "$pg_bin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
    -o "-p $pg_port -k $pgdir -c listen_addresses=127.0.0.1 -c shared_preload_libraries=pg_stat_statements" \
    start >/dev/null
  PG=postgres://postgres@127.0.0.1:$pg_port
  postmaster=$(head -n 1 "$pgdir/data/postmaster.pid")
  echo "== Postgres: a private server (stock settings, pg_stat_statements loaded) on port $pg_port"
else
  PG=postgres://postgres@127.0.0.1:5432
  postmaster=$(head -n 1 "$(psql "$PG/postgres" -Atc 'show data_directory')/postmaster.pid" 2>/dev/null || true)
  echo "== Postgres: the server on 127.0.0.1:5432"
fi
psql "$PG/postgres" -Atc "SELECT 'synchronous_commit=' || current_setting('synchronous_commit') || ', fsync=' || current_setting('fsync') || ', shared_buffers=' || current_setting('shared_buffers')"

echo "== pgbench TPC-B (scale 10, 8 clients, ${SECONDS_PER_RUN} s)"
psql "$PG/postgres" -qc "CREATE DATABASE $pgbench_db"
pgbench -h 127.0.0.1 -p "${PG##*:}" -U postgres -i -s 10 -q "$pgbench_db" >/dev/null 2>&1
pgbench_out=$(pgbench -h 127.0.0.1 -p "${PG##*:}" -U postgres -c 8 -j 2 -T "$SECONDS_PER_RUN" "$pgbench_db" 2>/dev/null)
echo "$pgbench_out" | grep -E "^tps|latency average"
tps=$(echo "$pgbench_out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -n 1)
psql "$PG/postgres" -qc "DROP DATABASE $pgbench_db WITH (FORCE)"

echo "== evisa dev (release) on 127.0.0.1:$port"
psql "$PG/postgres" -qc "CREATE DATABASE $bench_db"
psql "$PG/$bench_db" -qc "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" 2>/dev/null || true
# Webhooks arrive from Stripe's few addresses: the per-address callback limit is raised so the
# webhook bench measures ingestion, not the limiter's quota (it is still checked on each).
DATABASE_URL=$PG/$bench_db EVISA_HTTP_ADDR=127.0.0.1:$port EVISA_SANDBOX_ADDR=127.0.0.1:$sandbox_port \
  EVISA_METRICS_ADDR=off EVISA_LOG=warn EVISA_REDIS_PREFIX=bench-$run \
  EVISA_CALLBACKS_PER_MINUTE=1000000 EVISA_PAYMENTS_PER_MINUTE=1000000 \
  EVISA_LOGIN_ATTEMPTS_PER_MINUTE=1000000 EVISA_REGISTRATIONS_PER_HOUR=1000000 \
  "$BIN" dev >/tmp/evisa-bench-$run.log 2>&1 &
server=$!
for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.5
done
probe=(--database-url "$PG/$bench_db" --server-pid "$server" --postgres-pid "$postmaster")
pay() { "$BIN" bench payments --base "http://127.0.0.1:$port" --seconds "$SECONDS_PER_RUN" "${probe[@]}" "$@" 2> >(grep -v "^preparing\|^paying" >&2); }

echo "== card payments, closed loop (32 payers) for ${SECONDS_PER_RUN} s"
psql "$PG/$bench_db" -qAtc "SELECT pg_stat_statements_reset()" >/dev/null 2>&1 || true
closed=$(pay --rate 0 --concurrency 32)
echo "$closed"
# Where Postgres spent its time (`$1`: which run), for whoever wants to go further.
statements() {
  local top=/tmp/evisa-bench-statements-$run-$1.txt
  if psql "$PG/$bench_db" -qAt -F ' | ' -c "SELECT calls, round(total_exec_time::numeric, 1) AS total_ms,
        round(mean_exec_time::numeric, 3) AS mean_ms, left(regexp_replace(query, '\s+', ' ', 'g'), 160)
        FROM pg_stat_statements ORDER BY calls DESC, total_exec_time DESC LIMIT 40" >"$top" 2>/dev/null; then
    echo "(statements of the $1 run, most called first, preparation included: $top)"
  fi
  psql "$PG/$bench_db" -qAtc "SELECT pg_stat_statements_reset()" >/dev/null 2>&1 || true
}
statements closed-loop
capacity=$(echo "$closed" | sed -n 's/.*= \([0-9.]*\) succeeded\/s.*/\1/p')
echo "== card payments, offered 100/s for ${SECONDS_PER_RUN} s"
offered=$(pay --rate 100)
echo "$offered"
statements offered-100
half=$(python3 -c "print(max(1, int(float('${capacity:-2}') / 2)))")
echo "== card payments, offered half the capacity ($half/s) for ${SECONDS_PER_RUN} s"
pay --rate "$half"

echo "== signed webhooks for ${SECONDS_PER_RUN} s"
webhooks=$("$BIN" bench webhooks --base "http://127.0.0.1:$port" --seconds "$SECONDS_PER_RUN" "${probe[@]}" 2>/dev/null)
echo "$webhooks"
peak=$(echo "$closed" | sed -n 's/service peak RSS: \([0-9]*\) MB/\1/p')
rss_now=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$server/status" 2>/dev/null || echo "n/a")
kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true
server=""

echo "== the job layer as evisa work configures it"
psql "$PG/postgres" -qc "CREATE DATABASE $jobs_db"
jobs_out=$(DATABASE_URL=$PG/$jobs_db EVISA_LOG=warn "$BIN" bench jobs 2>/dev/null)
echo "$jobs_out"
jobs_rate=$(echo "$jobs_out" | sed -n 's/.*empty history.*= \([0-9]*\) jobs\/s.*/\1/p')

echo "== summary (targets in brackets)"
python3 - "$tps" "${capacity:-0}" "$jobs_rate" <<EOF
import sys
tps, cap, jobs = (float(x or 0) for x in sys.argv[1:4])
print(f"pgbench TPS {tps:.0f}; card payments/s {cap:.1f} = {cap / tps:.3f} x pgbench [>= 0.15]")
print(f"no-op jobs/s {jobs:.0f} = {jobs / tps:.1f} x pgbench [>= 12]")
EOF
echo "$offered" | grep "p99" | sed 's/^/offered 100\/s: /;s/$/ [p99 <= 50 ms]/'
echo "$closed" | grep -E "^(commits|statements) per payment" | sed 's/$/ [commits <= 6, statements <= 20]/'
echo "$webhooks" | grep "webhooks/s" | sed 's/$/ [>= 3000\/s]/'
echo "service peak RSS over the whole run: ${rss_now} MB (after the closed loop: ${peak:-n/a} MB) [<= 150 MB]"
