#!/usr/bin/env bash
# Property-based API conformance check: runs Schemathesis (version pinned in
# tests/peers/schemathesis-requirements.txt) with every check against a throwaway `evisa dev`
# (fresh database, free ports), once each as an applicant, an officer and an admin, and exits non-zero
# when any run finds a failure. scripts/test.sh runs it; by hand:
#
#   bash scripts/schemathesis.sh [path/to/evisa]      # default: $CARGO_TARGET_DIR/debug/evisa
#
# Knobs (environment): ST_MAX_EXAMPLES (20), ST_SEED (20260101), ST_ROLES ("applicant officer
# admin"), ST_REPORT_DIR (where JUnit reports go; default a temp dir).
# Needs Postgres and Redis on their standard local ports (scripts/services.sh starts them).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
EVISA=${1:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/evisa}
VENV=${ST_VENV:-$HOME/.cache/evisa/schemathesis-venv}
REQS=$ROOT/tests/peers/schemathesis-requirements.txt
MAX_EXAMPLES=${ST_MAX_EXAMPLES:-20}
SEED=${ST_SEED:-20260101}
ROLES=${ST_ROLES:-applicant officer admin}
[ -x "$EVISA" ] || { echo "schemathesis: no evisa binary at $EVISA" >&2; exit 2; }

# Schemathesis in its own venv, at the pinned version.
want=$(sed -n 's/^schemathesis==//p' "$REQS")
if [ "$("$VENV/bin/schemathesis" --version 2>/dev/null | awk '{print $NF}')" != "$want" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$REQS"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
tag=st_$(date +%s)_$$
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/evisa_schemathesis_$tag
export EVISA_HTTP_ADDR=127.0.0.1:$(free_port)
export EVISA_SANDBOX_ADDR=127.0.0.1:$(free_port)
export EVISA_REDIS_PREFIX=evisa_$tag
# Limits far above what the fuzzer sends, so that it explores the API rather than the 429s.
export EVISA_LOGIN_ATTEMPTS_PER_MINUTE=100000 EVISA_REGISTRATIONS_PER_HOUR=100000 \
  EVISA_PAYMENTS_PER_MINUTE=100000 EVISA_REFUNDS_PER_MINUTE=100000 \
  EVISA_FAILED_PAYMENTS_PER_APPLICATION=100000 EVISA_FAILED_PAYMENTS_PER_APPLICANT=100000
B=http://$EVISA_HTTP_ADDR
WORK=$(mktemp -d)
REPORTS=${ST_REPORT_DIR:-$WORK/reports}

server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  dropdb --if-exists --force -h 127.0.0.1 -U postgres "${DATABASE_URL##*/}" 2>/dev/null || true
  redis-cli -h 127.0.0.1 --scan --pattern "$EVISA_REDIS_PREFIX*" 2>/dev/null \
    | xargs -r redis-cli -h 127.0.0.1 del >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$EVISA" dev >"$WORK/server.log" 2>&1 &
server=$!
for _ in $(seq 1 120); do
  curl -fs "$B/readyz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
  sleep 0.5
done
curl -fs "$B/readyz" >/dev/null || { echo "schemathesis: $B/readyz never answered" >&2; tail -50 "$WORK/server.log" >&2; exit 1; }

PASSWORD='correct horse battery staple'
login() {
  curl -fs -X POST "$B/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$1\",\"password\":\"$PASSWORD\"}" | jq -er .access_token
}
curl -fs -X POST "$B/v1/auth/register" -H 'content-type: application/json' \
  -d "{\"email\":\"ann-$tag@example.org\",\"password\":\"$PASSWORD\"}" >/dev/null
declare -A TOKEN
TOKEN[applicant]=$(login "ann-$tag@example.org")
for role in officer admin; do
  printf '%s' "$PASSWORD" | "$EVISA" user create --email "$role-$tag@example.gov" --role "$role" --password-stdin >/dev/null
  TOKEN[$role]=$(login "$role-$tag@example.gov")
done

# One paid application (card, sandbox) so operations on existing payments and receipts get real ids.
auth=(-H "authorization: Bearer ${TOKEN[applicant]}" -H 'content-type: application/json')
APP=$(curl -fs -X POST "$B/v1/applications" "${auth[@]}" -d '{"full_name":"Ann Lee","passport_number":"X1234567",
  "date_of_birth":"1990-05-17","nationality":"FR","visa_type":"tourist","processing_speed":"standard",
  "intended_arrival_date":"2027-03-01"}' | jq -er .id)
curl -fs -X POST "$B/v1/applications/$APP/submit" "${auth[@]}" >/dev/null
PAY=$(curl -fs -X POST "$B/v1/applications/$APP/payments" "${auth[@]}" -H "Idempotency-Key: $tag" \
  -d '{"provider":"stripe","payment_method":"pm_card_visa"}' | jq -er .id)
for _ in $(seq 1 40); do
  [ "$(curl -fs "$B/v1/payments/$PAY" "${auth[@]}" | jq -r .status)" = succeeded ] && break
  sleep 0.25
done
CODE=$(curl -fs "$B/v1/payments/$PAY/receipt" "${auth[@]}" | jq -er .verification_code)
# Applicant-only operations that change a draft keep their generated ids (the stateful phase links them).
cat >"$WORK/schemathesis.toml" <<TOML
[[operations]]
include-path-regex = '^/v1/(admin/)?payments/\{id\}'
parameters = { id = "$PAY" }
[[operations]]
include-path-regex = '^/v1/admin/applications/\{id\}'
parameters = { id = "$APP" }
[[operations]]
include-name = ["GET /v1/applications/{id}", "GET /v1/applications/{id}/payments"]
parameters = { id = "$APP" }
[[operations]]
include-path = "/v1/receipts/{code}"
parameters = { code = "$CODE" }
TOML

status=0
for role in $ROLES; do
  echo "== schemathesis $want as $role against $B (seed $SEED, $MAX_EXAMPLES examples)"
  "$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" run "$B/openapi.json" --url "$B" \
    --checks all --phases examples,coverage,fuzzing,stateful \
    --max-examples "$MAX_EXAMPLES" --seed "$SEED" \
    --header "Authorization: Bearer ${TOKEN[$role]}" \
    --report junit --report-junit-path "$REPORTS/$role.xml" \
    --no-color || { status=1; echo "== schemathesis as $role: FAILED" >&2; }
done
echo "== JUnit reports in $REPORTS, server log in $WORK/server.log"
exit $status
