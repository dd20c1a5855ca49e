#!/usr/bin/env bash
# The hosted checkout page in a real headless Chromium: tests/browser/checkout.py (Playwright,
# pinned in tests/browser/requirements.txt, driving Debian's chromium; axe-core pinned in
# tests/browser/package-lock.json) against a throwaway `evisa dev` (fresh database, free ports).
# scripts/test.sh runs it; by hand:
#
#   bash scripts/checkout_browser.sh [path/to/evisa]     # default: $CARGO_TARGET_DIR/debug/evisa
#
# Screenshots of every state go to CHECKOUT_SCREENSHOTS (default: <target dir>/checkout-screenshots).
# Needs Postgres and Redis on their standard local ports (scripts/services.sh starts them).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
EVISA=${1:-$TARGET/debug/evisa}
CACHE=${EVISA_CACHE:-$HOME/.cache/evisa}
PY=$CACHE/venv/bin/python
SHOTS=${CHECKOUT_SCREENSHOTS:-$TARGET/checkout-screenshots}
[ -x "$EVISA" ] || { echo "checkout_browser: no evisa binary at $EVISA" >&2; exit 2; }

# Debian's Chromium (Playwright's own browser builds are never downloaded), and a CJK font so
# the Chinese page's screenshots show its text.
if [ ! -x /usr/bin/chromium ] || ! fc-list 2>/dev/null | grep -qi 'wenquanyi\|noto sans cjk'; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null
fi
if [ ! -x "$PY" ]; then mkdir -p "$CACHE"; python3 -m venv "$CACHE/venv"; fi
"$PY" -m pip install -q --disable-pip-version-check -r "$ROOT/tests/browser/requirements.txt"
(cd "$ROOT/tests/browser" && npm ci --no-audit --no-fund --silent)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
tag=browser_$(date +%s)_$$
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/evisa_$tag
export EVISA_HTTP_ADDR=127.0.0.1:$(free_port)
export EVISA_SANDBOX_ADDR=127.0.0.1:$(free_port)
export EVISA_METRICS_ADDR=off
export EVISA_REDIS_PREFIX=evisa_$tag
# Every check signs a new applicant in from 127.0.0.1 within a minute or two: the per-address
# sign-in and registration limits (tested in tests/e2e/limits.rs) would refuse the later ones.
export EVISA_LOGIN_ATTEMPTS_PER_MINUTE=1000 EVISA_REGISTRATIONS_PER_HOUR=1000
B=http://$EVISA_HTTP_ADDR
WORK=$(mktemp -d)

server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  dropdb --if-exists --force -h 127.0.0.1 -U postgres "${DATABASE_URL##*/}" 2>/dev/null || true
  redis-cli -h 127.0.0.1 --scan --pattern "$EVISA_REDIS_PREFIX*" 2>/dev/null \
    | xargs -r redis-cli -h 127.0.0.1 del >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$EVISA" dev >"$WORK/server.log" 2>&1 &
server=$!
for _ in $(seq 1 120); do
  curl -fs "$B/readyz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
  sleep 0.5
done
curl -fs "$B/readyz" >/dev/null || { echo "checkout_browser: $B/readyz never answered" >&2; tail -50 "$WORK/server.log" >&2; exit 1; }

"$PY" "$ROOT/tests/browser/checkout.py" "$B" "http://$EVISA_SANDBOX_ADDR" "$SHOTS"
