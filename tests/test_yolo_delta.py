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
from darknet_py.layers.yolo.delta import yolo_delta

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


def test_truths_on_one_cell_apply_in_order():
    """Two truths with the same box (classes 0 and 1) land on the same cell and anchor: as
    upstream's sequential loop, box deltas add up, both classes become targets (the second
    truth finds its class delta already written and rewrites only that one), the second
    write counts as rewritten."""
    d = TRAIN / CASES[0]
    step = json.loads((d / "step1" / "step.json").read_text())
    net = build_network(d / f"{CASES[0]}.cfg", batch=1, train=True)
    layer = net.layers[step["cost"][0]["layer"]]
    torch.manual_seed(0)
    out = torch.rand(1, layer.out_c, layer.out_h, layer.out_w)
    box = [0.45, 0.48, 0.5, 0.5]
    one = torch.zeros(1, 3, 6)
    one[0, 0, :5] = torch.tensor(box + [0.0])
    two = one.clone()
    two[0, 1, :5] = torch.tensor(box + [1.0])
    d1, s1 = yolo_delta(layer, out, one, net.options.width, net.options.height)
    d2, s2 = yolo_delta(layer, out, two, net.options.width, net.options.height)
    k = 5 + layer.classes
    d1 = d1.view(layer.n, k, layer.out_h, layer.out_w)
    d2 = d2.view(layer.n, k, layer.out_h, layer.out_w)
    o = out.view(layer.n, k, layer.out_h, layer.out_w)
    cell = (d1[:, :4] != 0).any(1).nonzero()
    assert cell.shape[0] == 1  # one anchor and cell took the truth
    a, j, i = cell[0].tolist()
    torch.testing.assert_close(d2[a, :4, j, i], 2 * d1[a, :4, j, i])
    torch.testing.assert_close(d2[a, 5:7, j, i], 1 - o[a, 5:7, j, i])
    torch.testing.assert_close(d2[a, 7:, j, i], -o[a, 7:, j, i])
    assert (s1.count, s2.count) == (1, 2) and (s1.rewritten_bbox, s2.rewritten_bbox) == (0, 1)


def test_the_layer_reads_its_statistics_when_asked():
    """Yolo.loss leaves the statistics on the device (the trainer reads them after starting the
    backward, so a GPU is not waited for in between); read, they are yolo_delta's own."""
    from darknet_py.layers.base import LossContext

    case = CASES[1]
    d = TRAIN / case
    step = json.loads((d / "step1" / "step.json").read_text())
    net = build_network(d / f"{case}.cfg", batch=step["mini_batch"], train=True)
    index = step["cost"][0]["layer"]
    layer = net.layers[index]
    nb = step["mini_batch"]
    out = torch.from_numpy(np.fromfile(d / "step1" / f"layer{index:03d}_yolo_output.f32", "<f4")
                           .reshape(nb, layer.out_c, layer.out_h, layer.out_w))
    truth = torch.from_numpy(np.fromfile(d / "step1" / "truth.f32", "<f4").reshape(nb, step["max_boxes"],
                                                                                   step["truth_size"]))
    inp = out.clone().requires_grad_(True)
    ctx = LossContext(netw=net.options.width, neth=net.options.height, seen=nb, flavor="cudnn",
                      inputs={index: inp})
    loss = layer.loss(out, truth, ctx)
    assert loss._stats.pending and loss._cost is None and loss._line is None
    _, want = yolo_delta(layer, out, truth, net.options.width, net.options.height)
    assert not want.pending
    assert loss.cost == want.cost and loss.line == want.line(layer, nb)
    assert not loss.stats.pending and loss.stats.rewritten_bbox == want.rewritten_bbox
    assert loss.cost == pytest.approx(step["cost"][0]["cost"], rel=1e-4)
