"""Upstream: make_reorg_old_layer / forward_reorg_old_layer (src/reorg_old_layer.c),
parse_reorg_old (src/parser.c), reorg_cpu (src/blas.c).

The [reorg] section (LAYER_TYPE REORG_OLD, yolov2's passthrough). Unlike [reorg3d] it
calls reorg_cpu with the *input's* shape and forward=0 (reverse=0), so the flat output is
out[i + w*(j + h*k)] = x[in the input read as c/(stride^2) channels of a (stride*h) x
(stride*w) image]: not a plain space-to-depth, but what yolov2's weights were trained with.
"""
from __future__ import annotations

from . import register
from .base import BuildContext, Layer
from .reorg import apply_reorg, check_fits


@register("reorg")
class ReorgOld(Layer):
    type_name = "none"  # upstream's name table has no entry for REORG_OLD
    type_id = 32
    section_name = "reorg"

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        self.stride = s.int("stride", 1)
        self.reverse = s.int("reverse", 0)
        if not (ctx.w and ctx.h and ctx.c):
            raise s.error(None, "the layer before a reorg layer must output an image")
        if self.stride < 1:
            raise s.error("stride", f"must be >= 1, not {self.stride}")
        st = self.stride
        if self.reverse:
            self.set_output(ctx.w * st, ctx.h * st, ctx.c // (st * st))
        else:
            self.set_output(ctx.w // st, ctx.h // st, ctx.c * st * st)
        self.inputs = ctx.w * ctx.h * ctx.c
        if self.outputs < 1:
            raise s.error("stride", f"stride={st} leaves no output for the input {ctx.w}x{ctx.h}x{ctx.c}")
        check_fits(self, s, (self.w, self.h, self.c), self.reverse)

    def forward(self, x, outputs=None):
        # upstream: reorg_cpu(input, l.w, l.h, l.c, batch, stride, reverse, output)
        return apply_reorg(self, x, (self.w, self.h, self.c), 1 if self.reverse else 0)
