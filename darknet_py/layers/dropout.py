"""Upstream: make_dropout_layer / forward_dropout_layer (src/dropout_layer.c),
parse_dropout (src/parser.c).

Identity at inference (upstream's dropout layer shares the previous layer's output
buffer). Upstream's summary shows w=h=c=0 (make_dropout_layer sets them only for
DropBlock) and the input shape as output. When built for training, plain dropout zeroes
each value with `probability` and scales the rest by 1/(1-probability).
"""
from __future__ import annotations

import torch

from . import register
from .base import BuildContext, Layer


@register("dropout")
class Dropout(Layer):
    type_name = "dropout"
    type_id = 7

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        self.probability = s.float("probability", 0.2)
        if not 0 <= self.probability < 1:
            raise s.error("probability", f"must be in [0, 1), not {self.probability}")
        self.dropblock = s.int("dropblock", 0)
        self.dropblock_size_rel = s.float("dropblock_size_rel", 0.0)
        # upstream reads dropblock_size_abs as a float into an int
        self.dropblock_size_abs = int(s.float("dropblock_size_abs", 0.0))
        if self.dropblock_size_abs > ctx.w or self.dropblock_size_abs > ctx.h:
            self.dropblock_size_abs = min(ctx.w, ctx.h)
        if self.dropblock and not self.dropblock_size_rel and not self.dropblock_size_abs:
            self.dropblock_size_abs = 7
        if self.dropblock_size_rel and self.dropblock_size_abs:
            self.dropblock_size_rel = 0.0
        if self.dropblock:
            if not (ctx.w > 0 and ctx.h > 0 and ctx.c > 0):
                raise s.error("dropblock", "DropBlock needs an image input (w, h, c > 0)")
        else:
            self.w = self.h = self.c = 0
        self.out_w, self.out_h, self.out_c = ctx.w, ctx.h, ctx.c
        self.inputs = self.outputs = ctx.inputs
        self.scale = 1.0 / (1.0 - self.probability)
        self.train_mode = ctx.train

    def forward(self, x, outputs=None):
        if not (self.train_mode and self.training) or self.probability == 0:
            return x
        if self.dropblock:
            raise NotImplementedError("DropBlock training is not supported by darknet_py")
        keep = torch.rand_like(x) >= self.probability
        return torch.where(keep, x * self.scale, torch.zeros_like(x))
