"""Upstream: activate / get_activation (src/activations.c, src/activations.h).

Each activation by upstream's name, as a function on a tensor (N, C, H, W). The ids are
upstream's ACTIVATION enum, which the layer summary reports.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

ACTIVATION_IDS = {
    "logistic": 0, "relu": 1, "relu6": 2, "relie": 3, "linear": 4, "ramp": 5, "tanh": 6,
    "plse": 7, "revleaky": 8, "leaky": 9, "elu": 10, "loggy": 11, "stair": 12, "hardtan": 13,
    "lhtan": 14, "selu": 15, "gelu": 16, "swish": 17, "mish": 18, "hard_mish": 19,
    "normalize_channels": 20, "normalize_channels_softmax": 21,
    "normalize_channels_softmax_maxval": 22,
}


def _stair(x):
    n = torch.floor(x)
    half = torch.floor(x / 2)
    return torch.where(torch.remainder(n, 2) == 0, half, (x - n) + half)


def _plse(x):
    return torch.where(x < -4, 0.01 * (x + 4), torch.where(x > 4, 0.01 * (x - 4) + 1, 0.125 * x + 0.5))


def _lhtan(x):
    return torch.where(x < 0, 0.001 * x, torch.where(x > 1, 0.001 * (x - 1) + 1, x))


def _mish(x):
    """upstream: x * tanh(softplus(x)), softplus with threshold 20 (x > 20 -> x, x < -20 -> exp(x)).

    Both thresholds hold for exp(clamp(x, -87, 20)): tanh of anything above ~9 is 1.0 in
    float32, and below -20 log1p(exp(x)) rounds to exp(x); below -87 only results under 1e-35
    in size change (exp would return denormals there, which torch's vectorized exp computes
    40x slower). Without autograd: with e = exp(...) and h = e + e*e/2, tanh(log1p(e)) is
    h / (h + 1), so mish = x / (1 + 1/h): arithmetic in place on one temporary instead of
    log1p and tanh (3x faster than torch's mish here); it differs from the tanh form by about
    1 ulp (2e-7 relative, as far from a float64 mish as the tanh form is). With autograd the
    tanh form, which torch differentiates without overflow.

    In an ONNX export, F.mish (the same function; softplus thresholds 20 as upstream's):
    it becomes ONNX's one Mish op. The clamped tanh form would become Clip, Exp, Add, Log,
    Tanh, Mul, which OpenCV's importer fuses into its Mish layer applied to the Clip's
    output, i.e. mish(min(x, 20)): 20 instead of x for every x > 20 (see outputs/export.py)."""
    if torch.onnx.is_in_onnx_export():
        return F.mish(x)
    if torch.is_grad_enabled() and x.requires_grad:
        return x * torch.tanh(torch.log1p(torch.exp(torch.clamp(x, -87.0, 20.0))))
    t = torch.clamp(x, -87.0, 20.0).exp_()
    t.addcmul_(t, t, value=0.5)  # h = e + e^2/2 = ((1 + e)^2 - 1) / 2
    t.reciprocal_().add_(1.0)
    return torch.div(x, t, out=t)


def _hard_mish(x):
    return torch.where(x > 0, x, torch.where(x > -2, x * x / 2 + x, torch.zeros_like(x)))


def _normalize_channels(x):
    # positive values divided by their sum over channels (+1e-4), negatives become 0
    pos = x.clamp(min=0)
    return pos / (pos.sum(dim=1, keepdim=True) + 0.0001)


def _normalize_channels_softmax(x, use_max: bool):
    m = x.amax(dim=1, keepdim=True) if use_max else 0.0
    e = torch.exp(x - m)
    return e / (e.sum(dim=1, keepdim=True) + 0.0001)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "logistic": torch.sigmoid,
    "relu": F.relu,
    "relu6": lambda x: x.clamp(0, 6),
    "relie": lambda x: torch.where(x > 0, x, 0.01 * x),
    "linear": lambda x: x,
    "ramp": lambda x: x * (x > 0) + 0.1 * x,
    "tanh": torch.tanh,
    "plse": _plse,
    "revleaky": lambda x: F.leaky_relu(x, 0.1),
    "leaky": lambda x: F.leaky_relu(x, 0.1),
    "elu": lambda x: torch.where(x >= 0, x, torch.exp(x) - 1),
    "loggy": lambda x: 2 * torch.sigmoid(x) - 1,
    "stair": _stair,
    "hardtan": lambda x: x.clamp(-1, 1),
    "lhtan": _lhtan,
    "selu": lambda x: torch.where(x >= 0, 1.0507 * x, 1.0507 * 1.6732 * (torch.exp(x) - 1)),
    "gelu": lambda x: 0.5 * x * (1 + torch.tanh(0.797885 * x + 0.035677 * x ** 3)),
    "swish": lambda x: x * torch.sigmoid(x),
    "mish": _mish,
    "hard_mish": _hard_mish,
    "normalize_channels": _normalize_channels,
    "normalize_channels_softmax": lambda x: _normalize_channels_softmax(x, False),
    "normalize_channels_softmax_maxval": lambda x: _normalize_channels_softmax(x, True),
}


def activation_from(section, key: str = "activation", default: str = "logistic") -> str:
    """Read an activation name; unlike upstream (which falls back to relu), unknown names are errors."""
    return section.choice(key, tuple(ACTIVATIONS), default)


def activate(x: torch.Tensor, name: str) -> torch.Tensor:
    return ACTIVATIONS[name](x)


class Mish(torch.autograd.Function):
    """Upstream: activate_array_mish forward, gradient_array_mish backward.

    gradient_array_mish (x*(1 - tanh(sp)^2)*(1 - exp(-sp)) + tanh(sp), sp = softplus with
    threshold 20) is the same derivative as autograd's of the tanh form, but autograd of the
    thresholded forward gives NaN above x ~ 88 (0*inf in the unused branch)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        with torch.no_grad():
            return _mish(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        sp = torch.where(x > 20, x, torch.where(x < -20, torch.exp(x), torch.log1p(torch.exp(x.clamp(max=20)))))
        t = torch.tanh(sp)
        return dy * (x * (1 - t * t) * (1 - torch.exp(-sp)) + t)


def train_activate(x: torch.Tensor, name: str, flavor: str = "cudnn") -> torch.Tensor:
    """The activation with upstream's gradient where autograd's differs (mish).

    flavor "cpu" (upstream's CPU build): a convolution or shortcut there applies relu6 through
    the scalar activate() switch, which has no case for it and returns 0, so the output is all
    zeros and so is the gradient (relu6_gradient of 0); the GPU build clamps to [0, 6]."""
    if flavor == "cpu" and name == "relu6":
        return torch.zeros_like(x)
    return Mish.apply(x) if name == "mish" else activate(x, name)
