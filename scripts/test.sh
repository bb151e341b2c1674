#!/usr/bin/env bash
# Sets up, then runs the whole test suite (lint and types first). Under CI=true any
# skipped test counts as a failure (tests/conftest.py), so nothing skips silently.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PYTHON=${PYTHON:-python3}

echo "== ruff"
"$PYTHON" -m ruff check proxy injector tests bench
echo "== mypy (strict on proxy/ and injector/)"
"$PYTHON" -m mypy proxy injector
echo "== pytest"
set +e
"$PYTHON" -m pytest -q -rfEs "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
  echo "test: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$status"
