#!/usr/bin/env bash
# Set up .venv if needed, then train the bundled classifier demo: a small darknet-style classifier
# (data/demo/figures.cfg) on data/demo/figures (generated 32x32 circles, squares, triangles and
# crosses: 400 training and 200 validation images), from scratch, on the CPU. Prints upstream's
# training lines and, with -topk, the top-2 accuracy on the validation images every 25 iterations
# after the 100th (drawn on data/demo/chart.png), then `classifier valid` (top-1 / top-2 of the
# final weights) and `classifier predict` of one validation image. Leaves
# data/demo/backup/figures_*.weights. DEMO_SEED=N picks another seed (default 1).
# One torch thread: this network is so small that a second thread costs more than it brings,
# and the data loading thread gets the other core.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cd data/demo
export OMP_NUM_THREADS=1
../../.venv/bin/python ../../darknet.py classifier train figures.data figures.cfg -dont_show -topk -workers 1 -seed "${DEMO_SEED:-1}"
../../.venv/bin/python ../../darknet.py classifier valid figures.data figures.cfg backup/figures_final.weights | tail -1
exec ../../.venv/bin/python ../../darknet.py classifier predict figures.data figures.cfg backup/figures_final.weights figures/valid/0003_cross.png
