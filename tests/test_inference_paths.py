"""The CPU inference fast paths compute what the plain paths compute.

- oneDNN pre-packed convolutions (layers/onednn.py) against F.conv2d + the activation, for
  every post-op it fuses, with groups, strides, dilation and a batch other than the packed one;
- mish without autograd against upstream's three-branch form, around both thresholds;
- channels_last survives a whole network (a batch of 1 used to be re-strided by as_image,
  which sent every later layer through a memory-format copy).
"""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import darknet_py
from darknet_py.activations import activate
from darknet_py.layers import onednn

needs_onednn = pytest.mark.skipif(not onednn.available(), reason="this torch has no oneDNN pointwise convolution")


@needs_onednn
@pytest.mark.parametrize("activation", sorted(onednn.POST_OPS) + ["mish", "gelu"])
@pytest.mark.parametrize("size,stride,dilation,groups", [(3, 1, 1, 1), (1, 1, 1, 1), (3, 2, 1, 1), (3, 1, 2, 1), (3, 1, 1, 4)])
def test_packed_conv_equals_conv2d(activation, size, stride, dilation, groups):
    gen = torch.Generator().manual_seed(size * 100 + stride * 10 + dilation + groups)
    c, n, h, w = 8, 12, 11, 9
    weight = torch.randn(n, c // groups, size, size, generator=gen) * 0.3
    bias = torch.randn(n, generator=gen)
    pad = (size // 2) * dilation
    conv = onednn.PackedConv.build(weight, bias, stride=(stride, stride), padding=(pad, pad),
                                   dilation=(dilation, dilation), groups=groups, input_shape=(1, c, h, w),
                                   activation=activation)
    assert conv is not None
    assert conv.fused_activation == (activation in onednn.POST_OPS)
    x = torch.randn(3, c, h, w, generator=gen).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = activate(F.conv2d(x, weight, bias, stride, pad, dilation, groups), activation)
        got = conv(x)
        if not conv.fused_activation:
            got = activate(got, activation)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert got.is_contiguous(memory_format=torch.channels_last)


def test_packed_conv_declines_what_it_cannot_run():
    w = torch.randn(4, 4, 3, 3, dtype=torch.float64)
    assert onednn.PackedConv.build(w, torch.zeros(4, dtype=torch.float64), stride=(1, 1), padding=(1, 1),
                                   dilation=(1, 1), groups=1, input_shape=(1, 4, 5, 5), activation="leaky") is None


def _mish_upstream(x):
    # activate_array_mish: softplus threshold 20, then x * tanh(sp), in float64
    x = x.double()
    sp = torch.where(x > 20, x, torch.where(x < -20, torch.exp(x), torch.log1p(torch.exp(x))))
    return x * torch.tanh(sp)


def test_mish_without_autograd_matches_upstream_form():
    x = torch.cat([torch.linspace(-120, 120, 20001), torch.tensor([-20.0, 20.0, -20.0001, 20.0001, 0.0, 88.8, -88.8])])
    with torch.inference_mode():
        got = activate(x, "mish")
    torch.testing.assert_close(got.double(), _mish_upstream(x), rtol=1e-6, atol=1e-34)
    # the autograd branch gives the same values and a gradient
    xg = x.clone().requires_grad_(True)
    y = activate(xg, "mish")
    y.sum().backward()
    torch.testing.assert_close(y.detach(), got, rtol=1e-6, atol=1e-34)
    assert torch.isfinite(xg.grad).all()
    xr = x.clone().requires_grad_(True)
    F.mish(xr).sum().backward()  # torch's own mish derivative as the second implementation
    torch.testing.assert_close(xg.grad, xr.grad, rtol=1e-5, atol=1e-6)


def test_network_keeps_channels_last():
    net = darknet_py.load_network(Path(__file__).resolve().parent.parent / "cfg" / "yolov4-tiny.cfg")
    seen = []
    hooks = [l.register_forward_hook(lambda m, i, o: seen.append((m.index, m.type_name, o)))
             for l in net.layers]
    x = np.random.default_rng(0).random((3, 416, 416), dtype=np.float32)
    net.predict_raw(x)
    for h in hooks:
        h.remove()
    # every layer feeding a convolution hands it channels_last memory (no copy in between)
    for i, name, out in seen:
        if name in ("convolutional", "maxpool") or (name == "none" and out.dim() == 4):
            assert out.is_contiguous(memory_format=torch.channels_last), f"layer {i} ({name}) output is not channels_last"


def test_fused_network_copies_and_pickles():
    import copy
    import io
    net = darknet_py.load_network(Path(__file__).resolve().parent.parent / "cfg" / "yolov4-tiny.cfg")
    x = np.random.default_rng(1).random((3, 416, 416), dtype=np.float32)
    want = net.predict_raw(x)
    buf = io.BytesIO()
    torch.save(net, buf)
    buf.seek(0)
    for other in (copy.deepcopy(net), torch.load(buf, weights_only=False)):
        got = other.predict_raw(x)
        for i in want:
            np.testing.assert_array_equal(got[i], want[i])
