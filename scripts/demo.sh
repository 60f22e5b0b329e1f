#!/usr/bin/env bash
# Set up .venv if needed, then run darknet_py on the bundled demo: detect objects in an image
# with the bundled yolov4-tiny-shaped network; writes predictions.jpg in data/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cd data/demo
exec ../../.venv/bin/python ../../darknet.py detector test obj.data map-yolov4-tiny.cfg trained.weights val/v1_flip.png -dont_show -ext_output
