#!/usr/bin/env bash
# Set up .venv if needed, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# one test process per core (pytest-xdist), each test file in one of them (its fixtures once)
exec .venv/bin/python -m pytest -n auto --dist loadfile "$@"
