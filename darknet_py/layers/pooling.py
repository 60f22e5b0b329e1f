"""Upstream: make_maxpool_layer / forward_maxpool_layer / forward_local_avgpool_layer
(src/maxpool_layer.c), parse_maxpool / parse_local_avgpool (src/parser.c).

Windows start at -padding/2 (integer division) and cells outside the image are ignored
(max over valid cells, average over the valid count). maxpool_depth pools across channels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import register
from .base import BuildContext, Layer


def _pad_amounts(size: int, stride: int, pad: int, n_in: int, n_out: int) -> tuple[int, int]:
    before = pad // 2
    after = (n_out - 1) * stride + size - n_in - before
    return before, after


@register("maxpool", "max")
class Maxpool(Layer):
    type_name = "maxpool"
    type_id = 3
    avg = False

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        stride = s.int("stride", 1)
        self.stride_x = s.int("stride_x", stride)
        self.stride_y = s.int("stride_y", stride)
        self.size = s.int("size", stride)
        self.pad = s.int("padding", self.size - 1)
        self.maxpool_depth = 0 if self.avg else s.int("maxpool_depth", 0)
        self.out_channels = 1 if self.avg else s.int("out_channels", 1)
        self.antialiasing = s.int("antialiasing", 0)
        if self.antialiasing:
            raise s.error("antialiasing", "antialiasing in pooling layers is not supported by darknet_py")
        if not (ctx.w and ctx.h and ctx.c):
            raise s.error(None, f"the layer before [{s.name}] must output an image")
        if self.size < 1 or self.stride_x < 1 or self.stride_y < 1:
            raise s.error("size", "size and stride must be >= 1")
        self.maxpool_zero_nonmax = 0 if self.avg else s.int("maxpool_zero_nonmax", 0)
        self.stride = self.stride_x
        if self.maxpool_depth:
            if self.out_channels < 1:
                raise s.error("out_channels", "must be >= 1")
            self.set_output(ctx.w, ctx.h, self.out_channels)
        else:
            ow = (ctx.w + self.pad - self.size) // self.stride_x + 1
            oh = (ctx.h + self.pad - self.size) // self.stride_y + 1
            if ow < 1 or oh < 1:
                raise s.error("size", f"output would be {ow}x{oh}: input {ctx.w}x{ctx.h} is too small")
            self.set_output(ow, oh, ctx.c)
        self.bflops = (self.size * self.size * ctx.c * self.out_h * self.out_w) / 1e9

    def forward(self, x, outputs=None):
        x = self.as_image(x)
        if self.maxpool_depth:
            # output channel g is the max over input channels g, g+out_c, g+2*out_c, ...
            n, c, h, w = x.shape
            oc = self.out_c
            full = -(-c // oc) * oc
            if full != c:
                x = torch.cat([x, x.new_full((n, full - c, h, w), float("-inf"))], 1)
            return x.view(n, full // oc, oc, h, w).amax(1)
        pw = _pad_amounts(self.size, self.stride_x, self.pad, self.w, self.out_w)
        ph = _pad_amounts(self.size, self.stride_y, self.pad, self.h, self.out_h)
        if self.avg:
            return self._avg(x, pw, ph)
        k, st = (self.size, self.size), (self.stride_y, self.stride_x)
        ceil = _native_padding(self.size, st, (ph, pw), (self.h, self.w), (self.out_h, self.out_w))
        if ceil is not None:
            # the same windows with torch's own (implicit -inf) padding: no padded copy, forward
            # or backward
            return F.max_pool2d(x, k, st, (ph[0], pw[0]), ceil_mode=ceil)
        return F.max_pool2d(_pad(x, pw, ph, float("-inf")), k, st)

    def _avg(self, x, pw, ph):
        xp = _pad(x, pw, ph, 0.0)
        ones = _pad(torch.ones_like(x[:1, :1]), pw, ph, 0.0)
        k, st = (self.size, self.size), (self.stride_y, self.stride_x)
        return F.avg_pool2d(xp, k, st) / F.avg_pool2d(ones, k, st)


def _native_padding(size: int, stride: tuple, pads: tuple, n_in: tuple, n_out: tuple):
    """None, or the ceil_mode with which F.max_pool2d, padding `before` on both sides, has
    upstream's windows: they start at i * stride - before in both, and torch reads no element
    past the input, so they are the same when torch's output size is upstream's (torch's
    padding is at most half the window)."""
    if any(not 0 <= before <= size // 2 for before, _after in pads):
        return None
    for ceil in (False, True):
        if all(_torch_pool_size(n, size, s, before, ceil) == o for s, (before, _), n, o in zip(stride, pads, n_in, n_out)):
            return ceil
    return None


def _torch_pool_size(n: int, size: int, stride: int, pad: int, ceil: bool) -> int:
    # at::pooling_output_shape: with ceil_mode the last window must start inside the input
    # or the left padding
    out = (n + 2 * pad - size + (stride - 1 if ceil else 0)) // stride + 1
    if ceil and (out - 1) * stride >= n + pad:
        out -= 1
    return out


def _pad(x, pw, ph, value):
    # F.pad takes negative amounts as crops, which is what an over-long tail means here
    if pw == (0, 0) and ph == (0, 0):
        return x
    return F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=value)


@register("local_avgpool", "local_avg")
class LocalAvgpool(Maxpool):
    type_name = "none"  # upstream's name table has no entry for LOCAL_AVGPOOL
    type_id = 4
    avg = True
