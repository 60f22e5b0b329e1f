#!/usr/bin/env python3
"""Sensitivity of an upstream darknet build on one parity training case (parity/README.md, train/
and classifier/).

Runs, one process at a time, `DARKNET detector train obj.data CASE.cfg W -dont_show` (a classifier
case, one with labels.txt: `DARKNET classifier train ...`) in a copy of
the case folder, once with W = init.weights (unperturbed) and once per seed s = 0..SEEDS-1 with
W = perturb.py(init.weights, EPS, s). Each run is compared with the case's final.weights and
train.log (metric.py) and the result is written as sensitivity JSON (the fixtures' keys plus
per_seed and build).

usage: sens.py --darknet BIN --case CASEDIR --work WORKDIR --out OUT.json
               [--seeds 10] [--eps 1e-6] [--threads 1] [--variant TEXT] [--reuse] [--ulps N]
--reuse: keep a run whose WORKDIR/<run>/run.log and final weights already exist (no rerun).
--ulps N: differences within N float32 spacings of the reference value count as 0 (metric.py
rounding_floor; used for the classifier cases, N = their number of updates), recorded as "ulps".
"""
import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import metric  # noqa: E402
import perturb  # noqa: E402

INPUTS = ("obj.data", "obj.names", "labels.txt", "tree.txt", "train.txt", "obj")


def sig(x, n=3):
    return float(f"{x:.{n}g}")


def run_one(darknet, case, name, d, init_src, eps, seed, threads, reuse):
    final = os.path.join(d, "backup", f"{name}_final.weights")
    if reuse and os.path.exists(final) and os.path.exists(os.path.join(d, "run.log")):
        return final
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "backup"))
    for f in INPUTS + (f"{name}.cfg",):
        src = os.path.join(case, f)
        if not os.path.exists(src):
            continue
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, os.path.join(d, f))
    if seed is None:
        shutil.copy(init_src, os.path.join(d, "init_run.weights"))
    else:
        perturb.perturb(init_src, os.path.join(d, "init_run.weights"), eps, seed)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with open(os.path.join(d, "run.log"), "w") as log:
        kind = "classifier" if os.path.exists(os.path.join(case, "labels.txt")) else "detector"
        # line-buffered (stdbuf), so that a crash on the way out loses no printed line
        line_buffered = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []
        r = subprocess.run([*line_buffered, darknet, kind, "train", "obj.data", f"{name}.cfg", "init_run.weights",
                            "-dont_show"], cwd=d, env=env, stdout=log, stderr=subprocess.STDOUT)
    # upstream's classifier training with mixup can crash on its way out (SIGSEGV when it frees
    # its data), after writing the final weights and every line: such a run counts
    assert os.path.exists(final), (final, r.returncode)
    return final


def measure(case, name, d, final, ref_final=None, ref_log=None, ulps=0):
    cfg = os.path.join(case, f"{name}.cfg")
    ref_final = ref_final or os.path.join(case, "final.weights")
    ref_log = ref_log or os.path.join(case, "train.log")
    dist, worst, _ = metric.update_distance(cfg, os.path.join(case, "init.weights"), ref_final,
                                            os.path.join(d, "init_run.weights"), final, ulps)
    loss = metric.loss_rel_diff(ref_log, os.path.join(d, "run.log"))
    return {"update_rel_diff": sig(dist),
            "worst_array": {k: worst[k] for k in ("layer", "type", "array")},
            "loss_rel_diff_per_iteration": [sig(x) for x in loss]}


def first_line(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0].strip()
    except Exception as e:  # noqa: BLE001
        return f"unavailable ({e})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--darknet", required=True)
    ap.add_argument("--case", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--eps", type=float, default=1e-6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variant", default="")
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--ulps", type=int, default=0)
    a = ap.parse_args()
    case = os.path.abspath(a.case.rstrip("/"))
    name = os.path.basename(case)
    darknet = os.path.abspath(a.darknet)
    init = os.path.join(case, "init.weights")

    d0 = os.path.join(a.work, "unperturbed")
    f0 = run_one(darknet, case, name, d0, init, a.eps, None, a.threads, a.reuse)
    unpert = measure(case, name, d0, f0, ulps=a.ulps)
    with open(f0, "rb") as x, open(os.path.join(case, "final.weights"), "rb") as y:
        unpert["final_weights_bit_identical"] = x.read() == y.read()
    ref_losses = metric.losses(os.path.join(case, "train.log"))
    unpert["losses_identical_as_printed"] = metric.losses(os.path.join(d0, "run.log")) == ref_losses

    per_seed = []
    for s in range(a.seeds):
        d = os.path.join(a.work, f"seed{s}")
        f = run_one(darknet, case, name, d, init, a.eps, s, a.threads, a.reuse)
        r = {"seed": s, **measure(case, name, d, f, ulps=a.ulps)}
        own = measure(case, name, d, f, ref_final=f0, ref_log=os.path.join(d0, "run.log"), ulps=a.ulps)
        r["vs_this_build_unperturbed"] = own
        per_seed.append(r)
        print(f"{name} seed {s}: {r['update_rel_diff']:.3g} {r['worst_array']} loss {r['loss_rel_diff_per_iteration']}",
              flush=True)

    worst = max(r["update_rel_diff"] for r in per_seed)
    loss_worst = [max(r["loss_rel_diff_per_iteration"][i] for r in per_seed) for i in range(len(ref_losses))]
    with open(darknet, "rb") as x:
        sha = hashlib.sha256(x.read()).hexdigest()
    bit = "bit-identical to" if unpert["final_weights_bit_identical"] else "NOT bit-identical to"
    out = {
        "what": (f"upstream darknet's own sensitivity on this case, measured with {a.variant or 'this build'}: "
                 f"run with every float of init.weights multiplied by (1 + {a.eps:g} * N(0,1)) "
                 f"(numpy.random.default_rng(seed).standard_normal, seeds 0..{a.seeds - 1}), {a.seeds} seeds; "
                 "the worst distance from final.weights / train.log over the seeds (per parameter array "
                 "max|(final_seed - init_seed) - (final_ref - init_ref)| / max|final_ref - init_ref|, worst over "
                 "arrays, batch-norm rolling statistics included"
                 + (f"; differences within {a.ulps} float32 spacings of the reference value count as 0"
                    if a.ulps else "") + "; loss relative per printed iteration)"),
        "eps": a.eps,
        "seeds": a.seeds,
        **({"ulps": a.ulps} if a.ulps else {}),
        "update_rel_diff": worst,
        "loss_rel_diff_per_iteration": loss_worst,
        "tolerance": {
            "update_rel_diff": max(0.01, sig(2 * worst, 4)),
            "loss_rel_diff_per_iteration": [max(0.001, sig(2 * x, 4)) for x in loss_worst],
        },
        "per_seed": per_seed,
        "build": {
            "note": (f"{a.variant or 'upstream build'}; binary sha256 {sha}, OMP_NUM_THREADS={a.threads}. "
                     f"Its unperturbed run is {bit} the fixture's final.weights: update_rel_diff "
                     f"{unpert['update_rel_diff']:.3g} (worst: layer {unpert['worst_array']['layer']} "
                     f"{unpert['worst_array']['type']} {unpert['worst_array']['array']}), loss rel diffs "
                     f"{unpert['loss_rel_diff_per_iteration']}. The per-seed distances above are from the "
                     "fixture's final.weights/train.log, so they include this build difference."),
            "unperturbed": unpert,
            "compiler": first_line(["gcc", "--version"]),
            "glibc": first_line(["ldd", "--version"]),
            "darknet_sha256": sha,
            "omp_num_threads": a.threads,
        },
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"{name}: worst {worst:.3g} median {statistics.median(r['update_rel_diff'] for r in per_seed):.3g} "
          f"loss {loss_worst}; unperturbed {unpert['update_rel_diff']:.3g} {unpert['loss_rel_diff_per_iteration']}")


if __name__ == "__main__":
    main()
