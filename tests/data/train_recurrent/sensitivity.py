#!/usr/bin/env python3
"""Measure how far upstream's own training of a case moves when its initial weights are
perturbed at float32 rounding level, and write the case's sensitivity.json.

usage (from the project root): .venv/bin/python tests/data/train_recurrent/sensitivity.py DARKNET CASE_DIR WORK

DARKNET: the reference binary the case was made with; WORK: a scratch folder. For seeds
0, 1, 2: init.weights perturbed by tests/data/train_sensitivity/scripts/perturb.py (every
float times 1 + 1e-6 N(0,1)), trained from inside a copy of the case with
`DARKNET detector train obj.data CASE.cfg init.weights -dont_show`, OMP_NUM_THREADS=1. Metric as
the other training cases': per parameter array (the layout read by darknet_py, whose
save_weights upstream reproduces byte for byte) max|(final - init) - (final_ref - init_ref)| /
max|final_ref - init_ref|, worst over arrays; per printed iteration |loss - loss_ref| / |loss_ref|.
Tolerance: twice the worst, at least 0.01 (update) and 0.001 (loss).
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "data" / "train_sensitivity" / "scripts"))
from perturb import perturb  # noqa: E402

from darknet_py.network import build_network  # noqa: E402

ITER = re.compile(r"^ (\d+): ([-\d.naninf]+), ")


def arrays(cfg, weights):
    net = build_network(cfg, batch=1)
    net.load_weights(weights, verbose=False)
    return [t.detach().numpy().copy() for l in net.layers for t in l.weight_arrays()]


def losses(log):
    return [float(m.group(2)) for m in map(ITER.match, Path(log).read_text().splitlines()) if m]


def main():
    darknet, case, work = sys.argv[1], Path(sys.argv[2]).resolve(), Path(sys.argv[3])
    name = case.name
    cfg = case / f"{name}.cfg"
    init_ref, final_ref = arrays(cfg, case / "init.weights"), arrays(cfg, case / "final.weights")
    loss_ref = losses(case / "train.log")
    per_seed = []
    for seed in range(3):
        d = work / f"seed{seed}"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(case, d)
        shutil.rmtree(d / "backup", ignore_errors=True)
        (d / "backup").mkdir()
        perturb(str(case / "init.weights"), str(d / "init.weights"), 1e-6, seed)
        with open(d / "run.log", "w") as f:
            subprocess.run([darknet, "detector", "train", "obj.data", f"{name}.cfg", "init.weights", "-dont_show"],
                           cwd=d, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                           check=True)
        init, final = arrays(cfg, d / "init.weights"), arrays(cfg, d / "backup" / f"{name}_final.weights")
        dist = 0.0
        for a0, a1, r0, r1 in zip(init, final, init_ref, final_ref):
            scale = np.abs(r1 - r0).max()
            err = np.abs((a1 - a0) - (r1 - r0)).max()
            dist = max(dist, float(err / scale if scale else err))
        lo = losses(d / "run.log")
        per_seed.append({"seed": seed, "update_rel_diff": dist,
                         "loss_rel_diff": [abs(a - b) / abs(b) for a, b in zip(lo, loss_ref)]})
    upd = max(s["update_rel_diff"] for s in per_seed)
    loss = [max(s["loss_rel_diff"][i] for s in per_seed) for i in range(len(loss_ref))]
    out = {"what": "upstream's sensitivity on this case: init.weights floats times (1 + 1e-6 N(0,1)), 3 seeds; "
                   "worst distance from final.weights / train.log",
           "eps": 1e-6, "seeds": 3, "update_rel_diff": float(f"{upd:.3g}"),
           "loss_rel_diff_per_iteration": [float(f"{v:.3g}") for v in loss],
           "tolerance": {"update_rel_diff": max(0.01, float(f"{2 * upd:.3g}")),
                         "loss_rel_diff_per_iteration": [max(0.001, float(f"{2 * v:.3g}")) for v in loss]},
           "per_seed": per_seed}
    (case / "sensitivity.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["tolerance"]))


if __name__ == "__main__":
    main()
