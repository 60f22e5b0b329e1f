"""yolo deltas against upstream's own: each train case's first mini-batch (step1/).

Upstream's yolo layer output during training and the truth array go in; the delta must be
upstream's layerNNN_yolo_delta.f32 and the layer cost that of step.json.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from darknet_py.network import build_network
from darknet_py.yolo_delta import yolo_delta

TRAIN = Path(__file__).parent / "data" / "train"
CASES = sorted(p.name for p in TRAIN.iterdir() if p.is_dir())


def step1_layers():
    for case in CASES:
        step = json.loads((TRAIN / case / "step1" / "step.json").read_text())
        for c in step["cost"]:
            yield case, c["layer"], c["cost"]


@pytest.mark.parametrize("case,index,cost", list(step1_layers()))
def test_yolo_delta_matches_upstream_step1(case, index, cost):
    d = TRAIN / case
    step = json.loads((d / "step1" / "step.json").read_text())
    net = build_network(d / f"{case}.cfg", batch=step["mini_batch"], train=True)
    layer = net.layers[index]
    nb = step["mini_batch"]
    out = np.fromfile(d / "step1" / f"layer{index:03d}_yolo_output.f32", "<f4").reshape(nb, layer.out_c, layer.out_h, layer.out_w)
    ref = np.fromfile(d / "step1" / f"layer{index:03d}_yolo_delta.f32", "<f4").reshape(out.shape)
    truth = np.fromfile(d / "step1" / "truth.f32", "<f4").reshape(nb, step["max_boxes"], step["truth_size"])
    delta, stats = yolo_delta(layer, torch.from_numpy(out), torch.from_numpy(truth), net.options.width, net.options.height)
    err = np.abs(delta.numpy() - ref)
    assert err.max() <= 1e-4 * max(1.0, np.abs(ref).max()), (err.max(), np.unravel_index(err.argmax(), err.shape))
    assert stats.cost == pytest.approx(cost, rel=1e-4)
