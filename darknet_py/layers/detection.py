"""Upstream: parse_detection (src/parser.c), make_detection_layer / forward_detection_layer
(src/detection_layer.c).

YOLOv1's detection layer on a flat input of side*side*((1+coords)*num + classes) values:
side*side*classes class scores, then side*side*num confidences, then side*side*num*coords
box values. The forward pass copies them, with softmax=1 a softmax over the classes of
each cell. Upstream's summary shows w=h=side, c=0 and a 0x0x0 output.
"""
from __future__ import annotations

import torch

from . import register
from .base import BuildContext, Layer


@register("detection")
class Detection(Layer):
    type_name = "detection"
    type_id = 6
    is_detection_output = True  # its training delta (forward_detection_layer with truth) is not implemented

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        self.coords = s.int("coords", 1)
        self.classes = s.int("classes", 1)
        self.rescore = s.int("rescore", 0)
        self.n = s.int("num", 1)
        self.side = s.int("side", 7)
        need = self.side * self.side * ((1 + self.coords) * self.n + self.classes)
        if need != ctx.inputs:
            raise s.error("side", f"side={self.side}, num={self.n}, coords={self.coords}, classes={self.classes} "
                                  f"need side*side*((1+coords)*num+classes) = {need} inputs, "
                                  f"but the layer before outputs {ctx.inputs}")
        self.w = self.h = self.side
        self.c = 0
        self.inputs = self.outputs = ctx.inputs
        self.softmax = s.int("softmax", 0)
        self.sqrt = s.int("sqrt", 0)
        self.max_boxes = s.int("max", 200)
        self.coord_scale = s.float("coord_scale", 1.0)
        self.forced = s.int("forced", 0)
        self.object_scale = s.float("object_scale", 1.0)
        self.noobject_scale = s.float("noobject_scale", 1.0)
        self.class_scale = s.float("class_scale", 1.0)
        self.jitter = s.float("jitter", 0.2)
        self.resize = s.float("resize", 1.0)
        self.random = s.float("random", 0.0)
        self.reorg = s.int("reorg", 0)

    def forward(self, x, outputs=None):
        nb = x.shape[0]
        y = x.reshape(nb, -1)
        if self.softmax:
            k = self.side * self.side * self.classes
            cls = torch.softmax(y[:, :k].reshape(nb, -1, self.classes), dim=-1).reshape(nb, k)
            y = torch.cat([cls, y[:, k:]], dim=1)
        return y.reshape(nb, self.outputs, 1, 1)
