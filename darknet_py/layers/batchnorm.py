"""Upstream: make_batchnorm_layer / forward_batchnorm_layer (src/batchnorm_layer.c),
parse_batchnorm (src/parser.c), load_batchnorm_weights (src/parser.c).

A standalone batch normalization; inference uses the rolling statistics:
(x - mean) / sqrt(var + .00001) * scale + bias. The .weights file holds biases, scales,
rolling mean and rolling variance (c values each).
"""
from __future__ import annotations

import torch
from torch import nn

from . import register
from .base import BuildContext, Layer

BN_EPS = 0.00001


@register("batchnorm")
class Batchnorm(Layer):
    type_name = "batchnorm"
    type_id = 24

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        c = ctx.c
        self.set_output(ctx.w, ctx.h, c)
        self.inputs = self.outputs
        self.n = c
        self.biases = nn.Parameter(torch.zeros(c))
        self.scales = nn.Parameter(torch.ones(c))
        self.register_buffer("rolling_mean", torch.zeros(c))
        self.register_buffer("rolling_variance", torch.ones(c))

    def weight_arrays(self):
        return [self.biases, self.scales, self.rolling_mean, self.rolling_variance]

    def forward(self, x, outputs=None):
        x = self.as_image(x)
        k = self.scales / torch.sqrt(self.rolling_variance + BN_EPS)
        return (x - self.rolling_mean.view(1, -1, 1, 1)) * k.view(1, -1, 1, 1) + self.biases.view(1, -1, 1, 1)
