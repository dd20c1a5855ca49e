#!/usr/bin/env bash
# Benchmarks on this machine, printing figures: Postgres's own TPC-B rate (pgbench) as the yardstick,
# then card payments end to end through `evisa dev` (API + workers + sandbox in one process) at an
# offered 100 payments/s and closed loop. The load generator runs on the same machine.
#
#   bash scripts/bench.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
bash scripts/services.sh >/dev/null
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/evisa/target}
cargo build --release --locked --bin evisa 2>&1 | tail -n 1
BIN=$CARGO_TARGET_DIR/release/evisa
PG=postgres://postgres@127.0.0.1:5432
run=$(date +%s)$$
bench_db=evisa_bench_$run
pgbench_db=evisa_pgbench_$run
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sandbox_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $bench_db WITH (FORCE)" 2>/dev/null || true
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $pgbench_db WITH (FORCE)" 2>/dev/null || true
}
trap cleanup EXIT

echo "== pgbench TPC-B (scale 10, 8 clients, ${SECONDS_PER_RUN} s)"
psql "$PG/postgres" -qc "CREATE DATABASE $pgbench_db"
pgbench -h 127.0.0.1 -U postgres -i -s 10 -q "$pgbench_db" >/dev/null 2>&1
pgbench -h 127.0.0.1 -U postgres -c 8 -j 2 -T "$SECONDS_PER_RUN" "$pgbench_db" 2>/dev/null | grep -E "^tps|latency average"

echo "== evisa dev (release) on 127.0.0.1:$port"
DATABASE_URL=$PG/$bench_db EVISA_HTTP_ADDR=127.0.0.1:$port EVISA_SANDBOX_ADDR=127.0.0.1:$sandbox_port \
  EVISA_LOG=warn EVISA_REDIS_PREFIX=bench-$run "$BIN" dev >/tmp/evisa-bench-$run.log 2>&1 &
server=$!
for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.5
done
echo "== card payments, offered 100/s for ${SECONDS_PER_RUN} s"
"$BIN" bench payments --base "http://127.0.0.1:$port" --rate 100 --seconds "$SECONDS_PER_RUN" 2>/dev/null
echo "== card payments, closed loop (32 payers) for ${SECONDS_PER_RUN} s"
"$BIN" bench payments --base "http://127.0.0.1:$port" --rate 0 --concurrency 32 --seconds "$SECONDS_PER_RUN" 2>/dev/null
