#!/usr/bin/env bash
# The whole test suite: unit tests, end-to-end tests of the API against real Postgres and Redis,
# clients generated from openapi/openapi.json driving a running server, and Schemathesis fuzzing
# it against the spec. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/evisa/target}
# Tests make a database per test on this server (and drop it when done).
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}

# Databases left behind by an interrupted run.
stale=$(psql "$DATABASE_URL" -Atc \
  "SELECT datname FROM pg_database WHERE datname ~ '^evisa_(test|cli|clients)_[0-9a-f]+$'" 2>/dev/null || true)
for db in $stale; do psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true; done

# Peers the Rust tests call: Stripe's official Python library signs webhooks.
CACHE=${EVISA_CACHE:-$HOME/.cache/evisa}
if [ ! -x "$CACHE/venv/bin/python" ]; then
  mkdir -p "$CACHE"
  python3 -m venv "$CACHE/venv"
fi
"$CACHE/venv/bin/python" -m pip install -q --disable-pip-version-check -r tests/peers/requirements.txt
# Ant Group's official Alipay SDK has the same top-level package name as python-alipay-sdk, so
# it lives apart (tests/peers/alipay_official_peer.py puts it on its path).
"$CACHE/venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade \
  --target "$CACHE/alipay-official" -r tests/peers/alipay-official-requirements.txt
export EVISA_ALIPAY_OFFICIAL_SDK="$CACHE/alipay-official"
export EVISA_PYTHON="$CACHE/venv/bin/python"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
EVISA_BIN="$CARGO_TARGET_DIR/debug/evisa" bash scripts/clients.sh 2>&1 | tee -a "$log"
# compose.yaml without Docker: the Compose Specification's schema, then its demo services as
# local processes paying a card end to end.
EVISA_BIN="$CARGO_TARGET_DIR/debug/evisa" bash scripts/compose_check.sh 2>&1 | tee -a "$log"
# Two APIs and two workers behind HAProxy: round robin, event streams across processes, a worker
# SIGKILLed and an API stopped under load, one charge per payment; payments/s of 1+1 and 2+2.
EVISA_BIN="$CARGO_TARGET_DIR/debug/evisa" bash scripts/scale.sh 2>&1 | tee -a "$log"
# Schemathesis, every check, applicant and officer, against a running `evisa dev`: 0 failures.
bash scripts/schemathesis.sh "$CARGO_TARGET_DIR/debug/evisa" 2>&1 | tee -a "$log"
# The hosted checkout page in headless Chromium (Playwright, axe-core): every state, 0 violations.
bash scripts/checkout_browser.sh "$CARGO_TARGET_DIR/debug/evisa" 2>&1 | tee -a "$log"

# One closing line for the whole run.
python3 - "$log" <<'PY'
import re, sys
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
passed = failed = 0
for p, f in re.findall(r"test result: \w+\. (\d+) passed; (\d+) failed", text):
    passed += int(p); failed += int(f)
# Each script's closing line (the generated clients', the checkout page's in Chromium).
for p, f in re.findall(r"^(\d+) passed, (\d+) failed$", text, re.M):
    passed += int(p); failed += int(f)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
