"""The first mini-batch of every train case taken apart (tests/data/train/CASE/step1/):
upstream's input goes in, each yolo layer's training output must be upstream's, upstream's
own yolo deltas are injected, and every conv layer's -grad must be upstream's update buffers
(weight, bias and scale updates before the update: minus the gradient over the mini-batch).

Measured (CPU, float32): yolo outputs within 2.4e-5 (t1, t2, t3, t5) and 4.2e-4 (t4: 175
layers; upstream's sequential float sums in mean_cpu/variance_cpu account for most of it —
emulating them brings it to 1.3e-4); update buffers within 2.3e-5 of each array's largest
magnitude (t1, t2, t3, t5) and 1.9e-3 (t4). Batch-normalized layers' bias updates are
exactly 0 upstream (its CPU backward_batchnorm_layer never fills them) and here.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from darknet_py.network import build_network

TRAIN = Path(__file__).resolve().parents[1] / "data" / "train"
CASES = sorted(p.name for p in TRAIN.iterdir() if p.is_dir())
OUTPUT_TOL = 1e-3  # absolute, on values up to ~1.4
UPDATE_TOL = 5e-3  # relative to each array's largest magnitude


def read(path, shape=None):
    a = np.fromfile(path, "<f4")
    return a if shape is None else a.reshape(shape)


@pytest.fixture(scope="module", params=CASES)
def step1(request):
    case = request.param
    d = TRAIN / case
    s1 = d / "step1"
    nb = json.loads((s1 / "step.json").read_text())["mini_batch"]
    net = build_network(d / f"{case}.cfg", batch=nb, train=True)
    net.load_weights(d / "init.weights", verbose=False)
    net.train()
    o = net.options
    x = torch.from_numpy(read(s1 / "input.f32", (nb, o.channels, o.height, o.width)))
    outputs, inputs = net.forward_train(x, "cpu")
    # upstream's own yolo deltas go back through each yolo layer's backward (CPU build)
    sum(net.layers[i].backward_surrogate(t, torch.from_numpy(read(s1 / f"layer{i:03d}_yolo_delta.f32", tuple(t.shape))),
                                         "cpu") for i, t in inputs.items()).backward()
    return case, s1, net, outputs


def test_yolo_outputs_match_upstream(step1):
    case, s1, net, outputs = step1
    yolos = [l.index for l in net.layers if l.type_name == "yolo"]
    assert yolos
    for i in yolos:
        ref = read(s1 / f"layer{i:03d}_yolo_output.f32")
        err = np.abs(outputs[i].detach().numpy().reshape(-1) - ref).max()
        assert err < OUTPUT_TOL, f"{case} yolo layer {i}: max abs err {err}"


def test_conv_gradients_match_upstream_update_buffers(step1):
    case, s1, net, _ = step1
    worst = []
    for layer in net.layers:
        if layer.type_name != "convolutional":
            continue
        for name, p in (("weight", layer.weights), ("bias", layer.biases), ("scale", getattr(layer, "scales", None))):
            path = s1 / f"layer{layer.index:03d}_conv_{name}_updates.f32"
            if p is None:
                assert not path.exists()
                continue
            ref = read(path)
            got = -p.grad.numpy().reshape(-1) if p.grad is not None else np.zeros_like(ref)
            scale = np.abs(ref).max()
            if scale == 0:  # batch-normalized biases: upstream's CPU backward leaves them 0
                assert np.all(got == 0), f"{case} layer {layer.index} {name}: upstream 0, got {np.abs(got).max()}"
                continue
            worst.append((np.abs(got - ref).max() / scale, layer.index, name))
    worst.sort(reverse=True)
    assert worst[0][0] < UPDATE_TOL, f"{case}: worst relative errors {worst[:5]}"


# -- the CPU build's delta bookkeeping, on tiny networks ----------------------------------
TINY = """[net]
batch=1
width=4
height=4
channels=1

[convolutional]
filters=2
size=1
activation=linear

{body}
"""


def tiny(body):
    from darknet_py.cfg import parse_cfg_text
    from darknet_py.network import Network
    net = Network(parse_cfg_text(TINY.format(body=body), "t.cfg"), "t.cfg", train=True)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.linspace(-1, 1, p.numel()).view(p.shape))
    return net


def conv0_grad(net, flavor, passes=1):
    x = torch.linspace(0, 1, 16).view(1, 1, 4, 4)
    grads = []
    for _ in range(passes):
        net.zero_grad()
        outputs, _ = net.forward_train(x, flavor, iteration=0)
        outputs[len(net.layers) - 1].square().sum().backward()
        grads.append(net.layers[0].weights.grad.clone())
    return grads


def test_conv_backward_overwrites_the_previous_delta_on_cpu():
    # conv 1 reads layer 0, route 2 concatenates layers 0 and 1. Upstream's CPU conv 1
    # backward zeroes layer 0's delta before writing, so the route's share is lost.
    net = tiny("[convolutional]\nfilters=2\nsize=1\nactivation=linear\n\n[route]\nlayers=0,1\n")
    cpu, = conv0_grad(net, "cpu")
    full, = conv0_grad(net, "cudnn")
    net.zero_grad()
    y0 = net.layers[0](torch.linspace(0, 1, 16).view(1, 1, 4, 4))
    (y0.detach().square().sum() + net.layers[1](y0).square().sum()).backward()
    torch.testing.assert_close(cpu, net.layers[0].weights.grad)
    assert not torch.allclose(cpu, full)


def test_route_delta_is_never_cleared_on_cpu():
    # route 1 is followed by a maxpool (not a conv): its delta keeps summing over passes, so
    # the second identical pass sends twice the first one's delta to conv 0
    body = "[route]\nlayers=-1\n\n[maxpool]\nsize=1\nstride=1\n"
    g1, g2 = conv0_grad(tiny(body), "cpu", passes=2)
    torch.testing.assert_close(g2, 2 * g1)
    c1, c2 = conv0_grad(tiny(body), "cudnn", passes=2)
    torch.testing.assert_close(c1, c2)
    torch.testing.assert_close(c1, g1)


def test_mish_gradient_is_upstreams_and_finite():
    from darknet_py.activations import Mish
    x = torch.tensor([-100.0, -25.0, -3.0, 0.0, 2.0, 25.0, 89.0, 500.0], requires_grad=True)
    Mish.apply(x).sum().backward()
    v = x.detach().double()
    sp = torch.where(v > 20, v, torch.where(v < -20, torch.exp(v), torch.log1p(torch.exp(v.clamp(max=20)))))
    t = torch.tanh(sp)
    expect = v * (1 - t * t) * (1 - torch.exp(-sp)) + t  # gradient_array_mish
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad.double(), expect, rtol=1e-5, atol=1e-9)  # float32: tiny values near 0
