"""Whole training runs against upstream's: every case of both training fixtures.

- tests/data/train: upstream's CPU build (its arithmetic is `-train_flavor cpu`, passed here);
- tests/data/train_gpu: the same cases with the arithmetic of upstream's GPU (cuDNN) build,
  darknet_py's default, so these run without the flag.

From inside a copy of the case folder, `darknet.py detector train obj.data CASE.cfg init.weights
-dont_show` must write backup/CASE_final.weights whose change from init.weights equals the
reference's change, for every parameter array (batch-norm rolling statistics included), within
`tolerance.update_rel_diff` of that change's largest magnitude, and print the reference's
iteration lines: loss (and avg loss) within `tolerance.loss_rel_diff_per_iteration[i]`
relative, rate within 2e-6. The yolo layer lines must agree in their names, normalizers, layer
and count, and in their values within 2e-3 wherever the reference is not chaotic (an iteration
whose loss tolerance is the 1e-3 floor); where it is, the iteration loss that sums them is
what is held to the measured tolerance.

The tolerance is twice how far the reference moves from itself when its initial weights are
perturbed at float32 rounding level (1e-6 relative), at least 1% / 1e-3: `sensitivity.json`
(3 seeds, the fixtures') and, where it exists, `sensitivity_10seeds.json` (10 more seeds of the
same measurement, made with upstream's binary as its README in tests/data/train_sensitivity
says): the larger of the two. Three seeds were too few: upstream's own runs of t2 (GPU
arithmetic) move by up to 1.9% of the update from a 1e-6 perturbation in 3 of 10 seeds, when
a leaky unit 5e-5 of the layer's range from 0 falls on the other side of it (and with it that
unit's gradient, by 10x), which the fixture's 3 seeds happened to miss.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from darknet_py.network import build_network

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
SUITES = {"train": "cpu", "train_gpu": "cudnn"}
CASES = [(suite, p.name) for suite in SUITES for p in sorted((DATA / suite).iterdir()) if p.is_dir()]
ITER = re.compile(r"^ (\d+): ([-\d.naninf]+), ([-\d.naninf]+) avg loss, ([\d.e-]+) rate, ")
V3 = re.compile(r"^v3 \((\w+) loss, Normalizer: \(iou: ([\d.]+), obj: ([\d.]+), cls: ([\d.]+)\) Region (\d+) "
                r"Avg \(IOU: ([-\d.nan]+)\), count: (\d+), class_loss = ([-\d.nan]+), iou_loss = ([-\d.nan]+), "
                r"total_loss = ([-\d.nan]+)")
LOSS_FLOOR = 1e-3


def parse(text):
    iters = [tuple(float(v) for v in m.groups()) for m in map(ITER.match, text.splitlines()) if m]
    yolos = [m.groups() for m in map(V3.match, text.splitlines()) if m]
    return iters, yolos


def arrays(cfg, weights):
    net = build_network(cfg, batch=1)
    net.load_weights(weights, verbose=False)
    return [(l.index, j, t.detach().numpy().copy()) for l in net.layers for j, t in enumerate(l.weight_arrays())]


def tolerance(d):
    """The case's tolerance: the larger of the fixture's and the 10-seed measurement's."""
    tol = json.loads((d / "sensitivity.json").read_text())["tolerance"]
    more = d / "sensitivity_10seeds.json"
    if more.exists():
        extra = json.loads(more.read_text())["tolerance"]
        tol = {"update_rel_diff": max(tol["update_rel_diff"], extra["update_rel_diff"]),
               "loss_rel_diff_per_iteration": [max(a, b) for a, b in zip(tol["loss_rel_diff_per_iteration"],
                                                                         extra["loss_rel_diff_per_iteration"])]}
    return tol


def _id(p):
    suite, case = p
    return f"{SUITES[suite]}-{case.split('-')[0]}"


@pytest.fixture(scope="module", params=CASES, ids=_id)
def run(request, tmp_path_factory):
    suite, case = request.param
    d = tmp_path_factory.mktemp(case) / case
    shutil.copytree(DATA / suite / case, d)
    flavor = ["-train_flavor", "cpu"] if SUITES[suite] == "cpu" else []  # cudnn is the default
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(ROOT / "darknet.py"), "detector", "train", "obj.data", f"{case}.cfg",
                        "init.weights", "-dont_show", *flavor], cwd=d, capture_output=True, text=True, env=env,
                       timeout=600)
    return case, d, r, tolerance(d)


def test_final_weights_match_upstream(run):
    case, d, r, tol = run
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    cfg = d / f"{case}.cfg"
    init = arrays(cfg, d / "init.weights")
    ours = arrays(cfg, d / "backup" / f"{case}_final.weights")
    ref = arrays(cfg, d / "final.weights")
    worst = (0.0, (-1, -1))
    for (li, j, a0), (_, _, a1), (_, _, a2) in zip(init, ours, ref):
        ref_change = a2 - a0
        scale = np.abs(ref_change).max()
        err = np.abs((a1 - a0) - ref_change).max()
        worst = max(worst, (err / scale if scale else err, (li, j)))
        assert err <= tol["update_rel_diff"] * scale + 1e-7, (
            f"layer {li} array {j}: change differs by {err:g} ({err / scale:.3g} of {scale:g}; "
            f"tolerance {tol['update_rel_diff']})")
    print(f"{case}: worst {worst[0]:.3g} of the update at layer/array {worst[1]}")


def test_printed_lines_match_upstream(run):
    case, d, r, tol = run
    ours_iter, ours_yolo = parse(r.stdout + "\n" + r.stderr)
    ref_iter, ref_yolo = parse((d / "train.log").read_text())
    loss_tol = tol["loss_rel_diff_per_iteration"]
    assert len(ours_iter) == len(ref_iter) == len(loss_tol) > 0
    for i, (a, b) in enumerate(zip(ours_iter, ref_iter)):
        assert a[0] == b[0]
        assert a[1] == pytest.approx(b[1], rel=loss_tol[i]), f"iteration {i + 1} loss"
        assert a[2] == pytest.approx(b[2], rel=max(loss_tol[:i + 1])), f"iteration {i + 1} avg loss"
        assert abs(a[3] - b[3]) <= 2e-6
    assert len(ours_yolo) == len(ref_yolo)
    per_iteration = len(ref_yolo) // len(ref_iter)  # subdivisions x yolo layers, in order
    for n, (a, b) in enumerate(zip(ours_yolo, ref_yolo)):
        assert a[:5] == b[:5] and a[6] == b[6]  # loss name, normalizers, layer, count
        if loss_tol[n // per_iteration] > LOSS_FLOOR:
            continue  # a chaotic iteration: its sum, the loss, is compared above
        for k in (5, 7, 8, 9):  # avg IOU, class_loss, iou_loss, total_loss
            assert float(a[k]) == pytest.approx(float(b[k]), rel=2e-3, abs=2e-5), (k, a, b)


def test_t3_sensitivity(tmp_path):
    """The chaos is ours too: perturbing t3's initial weights by 1e-6 (relative) moves our own
    iteration-4 loss (upstream's CPU arithmetic) by more than 1e-3 relative, while iterations
    1-3 agree to 1e-5; upstream's own worst over its seeds is 7.25e-2 (sensitivity.json)."""
    import contextlib
    import io

    import torch

    from darknet_py.data import loader_from_net, read_list
    from darknet_py.train.loop import Trainer

    case = "t3-yolov4-tiny-subdiv-smooth-sgdr"
    d = DATA / "train" / case
    cwd = os.getcwd()
    os.chdir(d)
    try:
        def losses(eps, seed=0):
            net = build_network(f"{case}.cfg", train=True)
            net.load_weights("init.weights", verbose=False)
            net.train_flavor = "cpu"
            g = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for p in net.parameters():
                    p.mul_(1 + eps * torch.randn(p.shape, generator=g))
            loader = loader_from_net(net, read_list("train.txt"), 3, seed=0)
            tr = Trainer(net)
            out = []
            for _ in range(4):
                x, t = loader.load(4, 128, 128)
                with contextlib.redirect_stderr(io.StringIO()):
                    out.append(tr.train_batch(np.asarray(x), np.asarray(t)))
            return out
        a = losses(0.0)
        moved = [losses(1e-6, seed) for seed in (0, 1)]
    finally:
        os.chdir(cwd)
    for b in moved:
        assert all(abs(x - y) / x < 1e-5 for x, y in zip(a[:3], b[:3]))
    assert max(abs(a[3] - b[3]) / a[3] for b in moved) > 1e-3
