"""Upstream's own sensitivity on a recurrent training case (README.md here):

    python sensitivity.py DARKNET CASE_DIR [SEEDS]

(CASE_DIR: train_X/, or train_X/gpu/ for the CUDA-semantics build: the cfg and init.weights are
taken from train_X/, train.log and final.weights, the reference, from CASE_DIR)

runs `DARKNET_SEED=7 DARKNET rnn train CASE.cfg P.weights -file sonnets.txt` with P.weights =
init.weights with every float times (1 + 1e-6 z), z = numpy default_rng(seed).standard_normal
(as tests/data/train_sensitivity/scripts/perturb.py), seeds 0..SEEDS-1 (default 10), and writes
CASE_DIR/sensitivity.json: the worst over the seeds of each printed loss's relative distance from
CASE_DIR/train.log, and per .weights array (darknet_py's layout) of
max|(final_seed - init_seed) - (final_ref - init_ref)| / max|final_ref - init_ref| over the arrays
that changed; `tolerance` is twice that, at least 1e-3 (loss) and 0.01 (arrays). DARKNET is an
upstream binary that can run the case (see README.md); run with the project's .venv.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import darknet_py

EPS = 1e-6
LINE = re.compile(r"^(\d+): ([-\d.naninf]+), ([-\d.naninf]+) avg")


def losses(log: str) -> list[float]:
    return [float(m.group(2)) for m in map(LINE.match, log.splitlines()) if m]


def arrays(cfg: Path, weights: Path) -> list[np.ndarray]:
    net = darknet_py.build_network(cfg, batch=1)
    net.load_weights(weights, verbose=False)
    return [a.detach().numpy().copy() for l in net.layers for a in l.weight_arrays()]


def perturb(src: Path, dst: Path, seed: int) -> None:
    raw = src.read_bytes()
    w = np.frombuffer(raw[20:], np.float32).copy()
    w *= (1.0 + EPS * np.random.default_rng(seed).standard_normal(w.size)).astype(np.float32)
    dst.write_bytes(raw[:20] + w.tobytes())


def main(darknet: str, case: Path, seeds: int = 10) -> None:
    home = case if (case / "init.weights").is_file() else case.parent
    name = home.name
    cfg = home / f"{name}.cfg"
    ref_loss = losses((case / "train.log").read_text())
    init_ref, final_ref = arrays(cfg, home / "init.weights"), arrays(cfg, case / "final.weights")
    changed = [i for i, (a, b) in enumerate(zip(init_ref, final_ref)) if np.any(a != b)]
    worst_arr, worst_loss, per_seed = 0.0, [0.0] * len(ref_loss), []
    for seed in range(seeds):
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            shutil.copy(cfg, d)
            shutil.copy(home.parent / "sonnets.txt", d)
            perturb(home / "init.weights", d / "init.weights", seed)
            (d / "backup").mkdir()
            env = dict(os.environ, DARKNET_SEED="7")
            r = subprocess.run([darknet, "rnn", "train", cfg.name, "init.weights", "-file", "sonnets.txt"],
                               cwd=d, env=env, capture_output=True, text=True, errors="replace")
            lo = losses(r.stderr)
            init_s, final_s = arrays(cfg, d / "init.weights"), arrays(cfg, d / "backup" / f"{name}_final.weights")
        dist = 0.0
        for i in changed:
            dref = final_ref[i] - init_ref[i]
            dist = max(dist, float(np.abs((final_s[i] - init_s[i]) - dref).max() / np.abs(dref).max()))
        rel = [abs(a - b) / abs(b) for a, b in zip(lo, ref_loss)]
        worst_arr = max(worst_arr, dist)
        worst_loss = [max(w, x) for w, x in zip(worst_loss, rel)]
        per_seed.append({"seed": seed, "update_rel_diff": float(f"{dist:.3g}"),
                         "loss_rel_diff": [float(f"{x:.3g}") for x in rel]})
    out = {"what": "upstream's own sensitivity (the binary named in README.md): init.weights times "
                   "(1 + 1e-6 N(0,1)), the worst distance from final.weights / train.log over the seeds",
           "eps": EPS, "seeds": seeds, "update_rel_diff": float(f"{worst_arr:.3g}"),
           "loss_rel_diff_per_iteration": [float(f"{x:.3g}") for x in worst_loss],
           "tolerance": {"update_rel_diff": max(0.01, 2 * float(f"{worst_arr:.3g}")),
                         "loss_rel_diff_per_iteration": [max(1e-3, 2 * float(f"{x:.3g}")) for x in worst_loss]},
           "per_seed": per_seed}
    (case / "sensitivity.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]).resolve(), int(sys.argv[3]) if len(sys.argv) > 3 else 10)
