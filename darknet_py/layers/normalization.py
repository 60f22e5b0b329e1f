"""Upstream: make_normalization_layer / forward_normalization_layer(_gpu) /
backward_normalization_layer(_gpu) (src/normalization_layer.c), parse_normalization (src/parser.c).

Local response normalization across channels ([normalization], alias [lrn]):
    y = x * norms^-beta,  norms[k] = kappa + alpha * (running window sum of x^2 over channels)

Upstream's window is a running sum that is not centred the way its comment-free loop
suggests: norms[0] sums channels 0 .. size/2 - 1, then for k >= 1 it adds channel
k + size/2 and removes channel k - (size-1)/2 - 1. For size=5 that never adds channel 2 but
removes it at k=5. We reproduce that running sum exactly (a cumulative sum over channels).

Backward (both builds, "approximate" by upstream's own word): the input delta is
delta * norms^-beta, the dependence of norms on x ignored, and it overwrites the previous
layer's delta instead of adding to it.
"""
from __future__ import annotations

import torch

from . import register
from .base import BuildContext, Layer


class _ApproxLRN(torch.autograd.Function):
    """y = x * scale, backward dx = dy * scale (scale = norms^-beta, treated as constant)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(scale)
        return x * scale

    @staticmethod
    def backward(ctx, dy):
        (scale,) = ctx.saved_tensors
        return dy * scale, None


@register("normalization", "lrn")
class Normalization(Layer):
    type_name = "normalization"
    type_id = 11

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        self.alpha = s.float("alpha", 0.0001)
        self.beta = s.float("beta", 0.75)
        self.kappa = s.float("kappa", 1.0)
        self.size = s.int("size", 5)
        if self.size < 1:
            raise s.error("size", f"must be >= 1, got {self.size}")
        if not (ctx.w and ctx.h and ctx.c):
            raise s.error(None, "the layer before a normalization layer must output an image")
        self.set_output(ctx.w, ctx.h, ctx.c)

    def norms(self, x: torch.Tensor) -> torch.Tensor:
        c = self.c
        sq = x * x  # (N, C, H, W)
        half, back = self.size // 2, (self.size - 1) // 2 + 1
        # per channel k >= 1: + sq[k + half] (if < c), - sq[k - back] (if >= 0)
        zeros = sq.new_zeros(sq.shape[0], 1, sq.shape[2], sq.shape[3])
        step = zeros.expand(-1, c, -1, -1).clone()
        k = torch.arange(1, c, device=x.device)
        add_idx, sub_idx = k + half, k - back
        ka = k[add_idx < c]
        step[:, ka] += sq[:, add_idx[add_idx < c]]
        ks = k[sub_idx >= 0]
        step[:, ks] -= sq[:, sub_idx[sub_idx >= 0]]
        step[:, 0:1] = sq[:, :min(half, c)].sum(1, keepdim=True) if half > 0 else zeros
        return self.kappa + self.alpha * torch.cumsum(step, 1)

    def forward(self, x, outputs=None):
        x = self.as_image(x)
        scale = self.norms(x.detach()).pow(-self.beta)
        if torch.is_grad_enabled() and x.requires_grad:
            return _ApproxLRN.apply(x, scale)
        return x * scale
