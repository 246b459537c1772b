#!/usr/bin/env bash
# Set up a fresh Debian machine for development and run every check: ruff, mypy, pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/deps.sh" --dev
VENV="${EDGEMETER_VENV:-$ROOT/.venv}"
cd "$ROOT"
echo "== ruff"
"$VENV/bin/ruff" check edgemeter tests benchmarks scripts
"$VENV/bin/ruff" format --check edgemeter tests benchmarks scripts
echo "== mypy"
"$VENV/bin/mypy"
echo "== pytest"
"$VENV/bin/python" -m pytest "$@"
