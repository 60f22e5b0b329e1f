#!/usr/bin/env bash
# Set up .venv if needed, then train the bundled demo: a small yolov4-tiny-shaped network on
# data/demo/shapes (generated circles, squares and triangles), from scratch, on the CPU.
# Leaves data/demo/backup/*.weights and data/demo/chart.png, prints upstream's training lines
# and the mAP report (`detector map`) of the final weights, on 100 validation images (201
# objects). Training uses the arithmetic of upstream's GPU build (the default; see README).
# DEMO_SEED=N picks another seed (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cd data/demo
../../.venv/bin/python ../../darknet.py detector train shapes.data shapes-yolov4-tiny.cfg -dont_show -map -seed "${DEMO_SEED:-1}"
exec ../../.venv/bin/python ../../darknet.py detector map shapes.data shapes-yolov4-tiny.cfg backup/shapes-yolov4-tiny_final.weights
