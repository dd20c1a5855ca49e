#!/usr/bin/env bash
# Starts Postgres and Redis on their standard local ports when they do not answer (a fresh
# machine may not have them up). Idempotent; prints what it did.
set -euo pipefail

answers() { timeout 1 bash -c "</dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_for() {
  local name=$1 port=$2
  for _ in $(seq 1 60); do
    answers "$port" && { echo "services: $name is up on 127.0.0.1:$port"; return 0; }
    sleep 0.5
  done
  echo "services: $name did not come up on 127.0.0.1:$port" >&2
  return 1
}

if ! answers 5432; then
  echo "services: starting Postgres"
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
  else
    echo "services: Postgres is not running and pg_ctlcluster is not available" >&2
    exit 1
  fi
fi
wait_for Postgres 5432
if command -v pg_isready >/dev/null; then
  for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
fi

if ! answers 6379; then
  echo "services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for Redis 6379
