"""Upstream: make_local_layer / forward_local_layer / backward_local_layer (src/local_layer.c),
parse_local (src/parser.c), the LOCAL branches of save_weights_upto / load_weights_upto.

A locally connected layer: a convolution whose filters differ at every output location.
`pad` is a number of pixels (not a flag as in [convolutional]):
    out_h = (h - size) / stride + 1      without pad
    out_h = (h - 1) / stride + 1         with pad (whatever its value)
and the input is read through im2col with `pad` pixels of zeros.
Weights, location-major: weights[j][m][c][ky][kx] for output location j = y*out_w + x,
filter m; biases: one per output value (n x out_h x out_w). The .weights file holds the
biases then the weights. Output = activation(bias + sum).

Upstream's im2col writes (h + 2*pad - size)/stride + 1 rows; where that differs from
out_h the gemm reads its column buffer with out_h*out_w as row length. We read that buffer
the same way (zeros where upstream's calloc'd buffer was never written); a layer whose
im2col would write past upstream's buffer is refused.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..activations import ACTIVATION_IDS, activation_from, train_activate, activate
from . import register
from .base import BuildContext, Layer, check_size


@register("local")
class Local(Layer):
    type_name = "local"
    type_id = 13

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        self.n = s.int("filters", 1)
        self.size = s.int("size", 1)
        self.stride = s.int("stride", 1)
        self.pad = s.int("pad", 0)
        self.activation = activation_from(s, default="logistic")
        self.activation_id = ACTIVATION_IDS[self.activation]
        if not (ctx.w and ctx.h and ctx.c):
            raise s.error(None, "the layer before a local layer must output an image")
        for key, value, low in (("filters", self.n, 1), ("size", self.size, 1), ("stride", self.stride, 1),
                                ("pad", self.pad, 0)):
            if value < low:
                raise s.error(key, f"must be >= {low}, got {value}")
        span_h = ctx.h - (1 if self.pad else self.size)
        span_w = ctx.w - (1 if self.pad else self.size)
        out_h, out_w = span_h // self.stride + 1, span_w // self.stride + 1
        if span_h < 0 or span_w < 0:
            raise s.error("size", f"output would be empty: input {ctx.w}x{ctx.h} is smaller than size={self.size}")
        self.set_output(out_w, out_h, self.n)
        self.locations = out_h * out_w
        k = ctx.c * self.size * self.size
        self.col_h = (ctx.h + 2 * self.pad - self.size) // self.stride + 1
        self.col_w = (ctx.w + 2 * self.pad - self.size) // self.stride + 1
        if self.col_h < 1 or self.col_w < 1 or self.col_h * self.col_w > self.locations:
            raise s.error("pad", f"size={self.size}, stride={self.stride}, pad={self.pad} make upstream's im2col write "
                                 f"{max(self.col_h, 0)}x{max(self.col_w, 0)} locations into a buffer of {out_h}x{out_w}")
        check_size(s, "filters", k * self.n * self.locations)
        self.weights = nn.Parameter(torch.zeros(self.locations, self.n, k))
        self.biases = nn.Parameter(torch.zeros(self.n, out_h, out_w))
        # upstream's summary fields: nweights is never set for a local layer
        self.bflops = 0.0
        self.train_mode = ctx.train

    def initialize(self, gen: torch.Generator) -> None:
        """make_local_layer: scale*U(-1, 1) with scale = sqrt(2/(size*size*c)) for the first
        c*n*size*size weights only (the first location; the others stay 0); biases 0."""
        with torch.no_grad():
            self.weights.zero_()
            first = self.weights[0]
            u = torch.rand(first.shape, generator=gen) * 2 - 1
            first.copy_(u * (2.0 / (self.size * self.size * self.c)) ** 0.5)
            self.biases.zero_()

    def weight_arrays(self):
        return [self.biases, self.weights]

    def forward(self, x, outputs=None):
        x = self.as_image(x)
        n = x.shape[0]
        cols = F.unfold(x, self.size, padding=self.pad, stride=self.stride)  # (N, k, col_h*col_w)
        if cols.shape[2] != self.locations:
            # upstream's buffer: im2col's rows written flat, read with a row length of `locations`
            flat = cols.new_zeros(n, cols.shape[1] * self.locations)
            flat[:, :cols.shape[1] * cols.shape[2]] = cols.reshape(n, -1)
            cols = flat.reshape(n, cols.shape[1], self.locations)
        y = torch.einsum("jmk,nkj->nmj", self.weights, cols).reshape(n, self.n, self.out_h, self.out_w)
        y = y + self.biases
        if self.train_mode and self.training:
            return train_activate(y, self.activation)
        return activate(y, self.activation)
