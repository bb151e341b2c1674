#!/usr/bin/env bash
# Sets up, then runs the whole test suite (lint and types first). Under CI=true any
# skipped test counts as a failure (tests/conftest.py), so nothing skips silently.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PYTHON=${PYTHON:-python3}
if [ "$("$PYTHON" -c 'import proxy._compiled as c; print(c.state())' 2>/dev/null)" = stale ]; then
  echo "== rebuilding the compiled hot path (a hot-path module changed since the last build)"
  "$PYTHON" setup.py -q build_ext --inplace >/dev/null
fi

echo "== ruff"
"$PYTHON" -m ruff check proxy injector tests bench
echo "== mypy (strict on proxy/ and injector/)"
"$PYTHON" -m mypy proxy injector
echo "== pytest"
set +e
"$PYTHON" -m pytest -q -rfEs "$@"
status=$?
if [ "$status" = 0 ] && [ "$#" = 0 ]; then
  # The suite above ran the compiled hot path; its source must behave the same.
  echo "== pytest tests/proxy on the pure-Python hot path (PILOTFISH_PURE_PYTHON=1)"
  PILOTFISH_PURE_PYTHON=1 "$PYTHON" -m pytest -q -rfEs tests/proxy
  status=$?
fi
set -e
if [ "$status" = 5 ]; then
  echo "test: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$status"
