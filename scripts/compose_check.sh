#!/usr/bin/env bash
# Checks compose.yaml without Docker: the Compose Specification's schema, the two shapes its
# profiles give, and the demo's services run as local processes paying a card end to end
# (scripts/compose_check.py says how). Needs Postgres and Redis on their standard local ports.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/evisa/target}
EVISA_BIN=${EVISA_BIN:-$CARGO_TARGET_DIR/debug/evisa}
# In CI the test suite has built it already; on a fresh checkout build it once.
if [ ! -x "$EVISA_BIN" ]; then
  cargo build --locked --bin evisa
fi
export EVISA_BIN
PY=${EVISA_PYTHON:-$HOME/.cache/evisa/venv/bin/python}
exec "$PY" scripts/compose_check.py
