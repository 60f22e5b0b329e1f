"""Upstream: make_upsample_layer / forward_upsample_layer (src/upsample_layer.c), upsample_cpu (src/blas.c).

stride > 0: nearest-neighbour upsampling times `scale`; stride < 0: the reverse, each output
cell the sum of its |stride| x |stride| block times `scale`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import register
from .base import BuildContext, Layer


@register("upsample")
class Upsample(Layer):
    type_name = "none"  # upstream's name table has no entry for UPSAMPLE
    type_id = 33

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        stride = s.int("stride", 2)
        if stride == 0:
            raise s.error("stride", "must not be 0")
        self.reverse = stride < 0
        self.stride = abs(stride)
        if self.reverse:
            self.set_output(ctx.w // self.stride, ctx.h // self.stride, ctx.c)
        else:
            self.set_output(ctx.w * stride, ctx.h * stride, ctx.c)
        self.inputs = ctx.w * ctx.h * ctx.c
        self.scale = s.float("scale", 1.0)

    def forward(self, x, outputs=None):
        x = self.as_image(x)
        st = self.stride
        if self.reverse:
            x = x[:, :, : self.out_h * st, : self.out_w * st]
            y = F.avg_pool2d(x, st, st) * (st * st)
        elif x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # the same repetition on the NHWC view keeps the memory format of the convolutions
            n, c, h, w = x.shape
            y = x.permute(0, 2, 3, 1)[:, :, None, :, None, :].expand(n, h, st, w, st, c)
            y = y.reshape(n, h * st, w * st, c).permute(0, 3, 1, 2)
        else:
            n, c, h, w = x.shape
            y = x[:, :, :, None, :, None].expand(n, c, h, st, w, st).reshape(n, c, h * st, w * st)
        return y * self.scale if self.scale != 1.0 else y
