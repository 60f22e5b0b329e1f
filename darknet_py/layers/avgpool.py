"""Upstream: make_avgpool_layer / forward_avgpool_layer (src/avgpool_layer.c),
parse_avgpool (src/parser.c).

Global average pooling: each channel's mean over the whole image, output 1x1xC.
"""
from __future__ import annotations

from . import register
from .base import BuildContext, Layer


@register("avgpool", "avg")
class Avgpool(Layer):
    type_name = "avgpool"
    type_id = 12

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        if not (ctx.w and ctx.h and ctx.c):
            raise s.error(None, "the layer before an avgpool layer must output an image")
        self.set_output(1, 1, ctx.c)
        self.inputs = ctx.w * ctx.h * ctx.c

    def forward(self, x, outputs=None):
        return self.as_image(x).mean(dim=(2, 3), keepdim=True)
