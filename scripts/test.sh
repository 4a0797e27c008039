#!/usr/bin/env bash
# The whole test suite: set-up, then ruff (lint and format), mypy strict, pytest.
# Under CI=true the PostgreSQL, SoftHSM2, Go sumdb/note interop, PDF report and Chromium console
# tests must run: this script starts or installs what they need, and the tests fail instead of
# skipping when a component is missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/bootstrap.sh dev

if [ "${CI:-}" = true ]; then
    bash scripts/ensure-postgres.sh
    bash scripts/ensure-go-note.sh
    bash scripts/ensure-pango.sh
    bash scripts/ensure-chromium.sh
    export OBLIVIO_TEST_POSTGRES_URL=${OBLIVIO_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}
    export OBLIVIO_REQUIRE_SERVICES=1
fi

echo "== ruff check" && .venv/bin/ruff check .
echo "== ruff format --check" && .venv/bin/ruff format --check .
echo "== mypy --strict" && .venv/bin/mypy
echo "== pytest"
# Tests wait on real processes (servers, the command line) more than they compute: three workers
# on a 2-core machine, each test file on one worker (its module fixtures set up once).
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n "${OBLIVIO_TEST_WORKERS:-3}" \
    --dist loadfile "$@"
