"""Upstream: make_cost_layer / forward_cost_layer (src/cost_layer.c), parse_cost (src/parser.c).

The loss at the end of a classifier. Without truth (inference) upstream's forward returns
at once, so its output buffer stays all zeros; so does ours. Its summary shows w=h=c=0 and
a 0x0x0 output with outputs = inputs.
"""
from __future__ import annotations

from . import register
from .base import BuildContext, Layer

COST_TYPES = ("sse", "masked", "smooth")


@register("cost")
class Cost(Layer):
    type_name = "cost"
    type_id = 10

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
