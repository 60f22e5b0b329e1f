#!/usr/bin/env bash
# Create .venv at the repository root (when missing) and install darknet_py with its test and
# onnx extras (the export tests run the exports in onnxruntime).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    # this exact version is on local disk here (a CPU build); an unpinned torch pulls a CUDA build
    .venv/bin/pip install -q "torch==2.13.0" || .venv/bin/pip install -q "torch>=2.1"
fi
.venv/bin/pip install -q -e ".[test,onnx]"
