"""Upstream: make_cost_layer / forward_cost_layer / backward_cost_layer (src/cost_layer.c),
parse_cost (src/parser.c), l2_cpu / smooth_l1_cpu (src/blas.c).

The loss at the end of a classifier. Without truth (inference) upstream's forward returns
at once, so its output buffer stays all zeros; so does ours. Its summary shows w=h=c=0 and
a 0x0x0 output with outputs = inputs.

Training (`loss_delta`): the delta truth - input (sse, masked) or its smooth-L1 form, cost
the sum of the errors; the backward adds scale * delta to the previous layer's delta (after a
[softmax] that delta passes on unchanged: layers/softmax.py).
"""
from __future__ import annotations

import torch

from . import register
from .base import BuildContext, Layer
from .softmax import SECRET_NUM

COST_TYPES = ("sse", "masked", "smooth")


@register("cost")
class Cost(Layer):
    type_name = "cost"
    type_id = 10
    produces_loss = True
    is_prediction = False  # its output is zeros outside training: get_network_output skips it

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        # upstream's get_cost_type knows sse, masked and smooth (anything else: sse, with a warning)
        self.cost_type = s.choice("type", COST_TYPES, "sse")
        self.scale = s.float("scale", 1.0)
        self.ratio = s.float("ratio", 0.0)
        self.w = self.h = self.c = 0
        self.inputs = self.outputs = ctx.inputs

    def forward(self, x, outputs=None):
        return x.new_zeros(x.shape[0], self.outputs, 1, 1)

    def loss(self, output, truth, net):
        """The delta is taken at the layer's input (its output is zeros)."""
        inp = net.inputs[self.index]
        delta, cost = self.loss_delta(inp, truth)
        return self.delta_loss(inp, delta, cost, net.flavor)

    def loss_delta(self, inp: torch.Tensor, truth: torch.Tensor):
        """forward_cost_layer with truth: (delta already times `scale`, cost)."""
        x, t = self.truth_rows(inp, truth)
        if self.cost_type == "masked":  # upstream writes SECRET_NUM into its input there
            x = torch.where(t == SECRET_NUM, t, x)
        diff = t - x
        if self.cost_type == "smooth":
            small = diff.abs() < 1
            err = torch.where(small, diff * diff, 2 * diff.abs() - 1)
            delta = torch.where(small, diff, torch.where(diff > 0, torch.ones_like(diff), -torch.ones_like(diff)))
        else:
            err, delta = diff * diff, diff
        return delta * self.scale, float(err.sum())
