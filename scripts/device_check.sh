#!/usr/bin/env bash
# Prove the CUDA path on this machine (see scripts/device_check.py): sets up .venv if needed,
# runs the checks, prints their JSON at the end. Without CUDA: a dry run on the CPU, exit 0.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/device_check.py "$@"
