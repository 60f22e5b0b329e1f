"""Upstream: make_crop_layer / forward_crop_layer (src/crop_layer.c), parse_crop (src/parser.c).

Cuts a crop_width x crop_height window out of the image and maps values x -> 2x - 1
(x unchanged with noadjust=1). At inference the window is centred:
offset = (size - crop) // 2, never flipped. When built for training the offsets are
random (one draw per batch, as upstream) and with flip=1 the window is mirrored half
the time.
"""
from __future__ import annotations

import random

import torch

from . import register
from .base import BuildContext, Layer


@register("crop")
class Crop(Layer):
    type_name = "crop"
    type_id = 8

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        crop_height = s.int("crop_height", 1)
        crop_width = s.int("crop_width", 1)
        self.flip = s.int("flip", 0)
        self.angle = s.float("angle", 0.0)
        self.saturation = s.float("saturation", 1.0)
        self.exposure = s.float("exposure", 1.0)
        if not (ctx.w and ctx.h and ctx.c):
            raise s.error(None, "the layer before a crop layer must output an image")
        self.noadjust = s.int("noadjust", 0)
        if not 1 <= crop_height <= ctx.h:
            raise s.error("crop_height", f"must be in 1..{ctx.h} (the input height), not {crop_height}")
        if not 1 <= crop_width <= ctx.w:
            raise s.error("crop_width", f"must be in 1..{ctx.w} (the input width), not {crop_width}")
        self.scale = crop_height / ctx.h
        self.set_output(crop_width, crop_height, ctx.c)
        self.inputs = ctx.w * ctx.h * ctx.c
        self.shift = s.float("shift", 0.0)
        self.train_mode = ctx.train

    def forward(self, x, outputs=None):
        x = self.as_image(x)
        flip = False
        dh, dw = (self.h - self.out_h) // 2, (self.w - self.out_w) // 2
        if self.train_mode and self.training:
            flip = bool(self.flip and random.randrange(2))
            dh = random.randrange(self.h - self.out_h + 1)
            dw = random.randrange(self.w - self.out_w + 1)
        y = x[:, :, dh:dh + self.out_h, dw:dw + self.out_w]
        if flip:
            # upstream: col = w - dw - j - 1
            y = torch.flip(x[:, :, dh:dh + self.out_h, self.w - dw - self.out_w:self.w - dw], dims=(3,))
        if self.noadjust:
            return y.contiguous()
        return y * 2 - 1
