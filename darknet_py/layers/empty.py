"""Upstream: the EMPTY branch of parse_network_cfg_custom (src/parser.c), empty_func.

[empty] / [silence]: passes its input on unchanged (upstream shares the previous layer's
output buffer); input and output shapes are the previous layer's.
"""
from __future__ import annotations

from . import register
from .base import BuildContext, Layer


@register("empty", "silence")
class Empty(Layer):
    type_name = "none"  # upstream's name table has no entry for EMPTY
    type_id = 36

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        self.out_w, self.out_h, self.out_c = ctx.w, ctx.h, ctx.c
        self.inputs = self.outputs = ctx.inputs

    def forward(self, x, outputs=None):
        return x
