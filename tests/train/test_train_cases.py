"""Whole training runs against upstream's: every case of the train fixtures.

From inside a copy of the case folder, `darknet.py detector train obj.data CASE.cfg init.weights
-dont_show` must write backup/CASE_final.weights whose change from init.weights equals
upstream's final.weights' change within 1% of that change's largest magnitude, for every
parameter array (batch-norm rolling statistics included), and print upstream's iteration
lines (loss relative 1e-3, rate absolute 2e-6) and yolo lines.
"""
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
TRAIN = ROOT / "tests" / "data" / "train"
CASES = sorted(p.name for p in TRAIN.iterdir() if p.is_dir())
ITER = re.compile(r"^ (\d+): ([-\d.naninf]+), ([-\d.naninf]+) avg loss, ([\d.e-]+) rate, ")
V3 = re.compile(r"^v3 \((\w+) loss, Normalizer: \(iou: ([\d.]+), obj: ([\d.]+), cls: ([\d.]+)\) Region (\d+) "
                r"Avg \(IOU: ([-\d.nan]+)\), count: (\d+), class_loss = ([-\d.nan]+), iou_loss = ([-\d.nan]+), "
                r"total_loss = ([-\d.nan]+)")


def parse(text):
    iters = [tuple(float(v) for v in m.groups()) for m in map(ITER.match, text.splitlines()) if m]
    yolos = [m.groups() for m in map(V3.match, text.splitlines()) if m]
    return iters, yolos


def arrays(cfg, weights):
    net = build_network(cfg, batch=1)
    net.load_weights(weights, verbose=False)
    return [(l.index, j, t.detach().numpy().copy()) for l in net.layers for j, t in enumerate(l.weight_arrays())]


@pytest.fixture(scope="module", params=CASES)
def run(request, tmp_path_factory):
    case = request.param
    d = tmp_path_factory.mktemp(case) / case
    shutil.copytree(TRAIN / case, d)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(ROOT / "darknet.py"), "detector", "train", "obj.data", f"{case}.cfg",
                        "init.weights", "-dont_show"], cwd=d, capture_output=True, text=True, env=env, timeout=600)
    return case, d, r


def test_final_weights_match_upstream(run):
    case, d, r = run
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    cfg = d / f"{case}.cfg"
    init = arrays(cfg, d / "init.weights")
    ours = arrays(cfg, d / "backup" / f"{case}_final.weights")
    ref = arrays(cfg, d / "final.weights")
    worst = []
    for (li, j, a0), (_, _, a1), (_, _, a2) in zip(init, ours, ref):
        ref_change = a2 - a0
        scale = np.abs(ref_change).max()
        err = np.abs((a1 - a0) - ref_change).max()
        worst.append((err / scale if scale else err, li, j))
        assert err <= 0.01 * scale + 1e-7, f"layer {li} array {j}: change differs by {err:g} (1% of {scale:g})"


def test_printed_lines_match_upstream(run):
    case, d, r = run
    ours_iter, ours_yolo = parse(r.stdout + "\n" + r.stderr)
    ref_iter, ref_yolo = parse((d / "train.log").read_text())
    assert len(ours_iter) == len(ref_iter) > 0
    for a, b in zip(ours_iter, ref_iter):
        assert a[0] == b[0]
        assert a[1] == pytest.approx(b[1], rel=1e-3)
        assert a[2] == pytest.approx(b[2], rel=1e-3)
        assert abs(a[3] - b[3]) <= 2e-6
    assert len(ours_yolo) == len(ref_yolo)
    for a, b in zip(ours_yolo, ref_yolo):
        assert a[:5] == b[:5] and a[6] == b[6]  # loss name, normalizers, layer, count
        for k in (5, 7, 8, 9):  # avg IOU, class_loss, iou_loss, total_loss
            assert float(a[k]) == pytest.approx(float(b[k]), rel=2e-3, abs=2e-5), (k, a, b)
