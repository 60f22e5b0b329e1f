"""Upstream: make_implicit_layer / forward_implicit_layer (src/representation_layer.c),
parse_implicit (src/parser.c), load_implicit_weights (src/parser.c).

A learned constant (YOLOR's implicit knowledge): `filters` x `atoms` weights, output
1 x atoms x filters for every image regardless of the input. Weights are initialized as
upstream, mean + uniform(-std, std).
"""
from __future__ import annotations

import torch
from torch import nn

from . import register
from .base import BuildContext, Layer


@register("implicit")
class Implicit(Layer):
    type_name = "none"  # upstream's name table has no entry for IMPLICIT
    type_id = 39

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        self.mean_init = s.float("mean", 0.0)
        self.std_init = s.float("std", 0.2)
        filters = s.int("filters", 128)
        atoms = s.int("atoms", 1)
        if filters < 1 or atoms < 1:
            raise s.error("filters", "filters and atoms must be >= 1")
        self.w = self.h = self.c = 1
        self.set_output(1, atoms, filters)
        self.inputs = 1
        self.nweights = self.outputs
        init = self.mean_init + (torch.rand(self.nweights) * 2 - 1) * self.std_init
        self.weights = nn.Parameter(init)

    def weight_arrays(self):
        return [self.weights]

    def forward(self, x, outputs=None):
        y = self.weights.view(1, self.out_c, self.out_h, self.out_w)
        if not torch.is_grad_enabled():
            y = y.detach()
        return y.expand(x.shape[0], -1, -1, -1).to(x.dtype)
