"""Upstream: parse_region (src/parser.c), make_region_layer / forward_region_layer
(src/region_layer.c), flatten (src/blas.c).

YOLOv2's detection layer. Upstream's CPU forward first *flattens* the input (the
(anchors*(coords+1+classes), h*w) planes become h*w rows of anchors*(coords+1+classes)
values), then applies the logistic to entry 4 (objectness) and a softmax to the classes
that follow (entries 5..; with tree=FILE a softmax over each group of the hierarchy).
x, y, w, h stay raw (the box decoding applies the logistic to x, y). Our output has
upstream's l.output memory layout, viewed as (N, out_c, out_h, out_w).
"""
from __future__ import annotations

import warnings

import torch

from .delta import region_delta
from .. import register
from ..base import BuildContext, Layer
from ..softmax import SoftmaxTree, softmax_groups


def parse_region_anchors(s, n: int, default: float, allow_extra: bool = True) -> list[float]:
    """Anchors as upstream's parse_region / parse_gaussian_yolo store them in l.biases:
    2*n values; those not given keep the default (with a warning). parse_region ignores
    numbers beyond 2*n (warning); parse_gaussian_yolo would write past its array (error)."""
    biases = [default] * (2 * n)
    if not s.has("anchors"):
        return biases
    values = s.floats("anchors")
    if len(values) > 2 * n and not allow_extra:
        raise s.error("anchors", f"has {len(values)} numbers but num={n} takes at most {2 * n}")
    if len(values) != 2 * n:
        opt = s.find("anchors")
        what = "ignores the rest" if len(values) > 2 * n else f"keeps {default} for the rest"
        warnings.warn(f"{s.path}:{opt.line}: [{s.name}] anchors has {len(values)} numbers but num={n} "
                      f"uses {2 * n}: upstream {what}", stacklevel=3)
    biases[:min(len(values), 2 * n)] = values[:2 * n]
    return biases


@register("region")
class Region(Layer):
    type_name = "region"
    type_id = 27
    is_detection_output = is_detector_head = produces_loss = True

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        self.coords = s.int("coords", 4)
        self.classes = s.int("classes", 20)
        self.n = s.int("num", 1)
        self.max_boxes = s.int("max", 200)
        if self.n < 1 or self.classes < 0 or self.coords < 4:
            raise s.error("num", "num must be >= 1, classes >= 0 and coords >= 4")
        c = self.n * (self.classes + self.coords + 1)
        self.set_output(ctx.w, ctx.h, c)
        self.w, self.h, self.c = ctx.w, ctx.h, c
        self.inputs = self.outputs
        if self.outputs != ctx.inputs:
            raise s.error("classes", f"the layer before has {ctx.c} filters but [region] with num={self.n}, "
                                     f"classes={self.classes}, coords={self.coords} needs "
                                     f"{self.n}*({self.classes}+{self.coords}+1) = {c} (input {ctx.w}x{ctx.h}x{ctx.c})")
        self.log = s.int("log", 0)
        self.sqrt = s.int("sqrt", 0)
        self.softmax = s.int("softmax", 0)
        self.focal_loss = s.int("focal_loss", 0)
        self.jitter = s.float("jitter", 0.2)
        self.resize = s.float("resize", 1.0)
        self.rescore = s.int("rescore", 0)
        self.thresh = s.float("thresh", 0.5)
        self.classfix = s.int("classfix", 0)
        self.absolute = s.int("absolute", 0)
        self.random = s.float("random", 0.0)
        self.coord_scale = s.float("coord_scale", 1.0)
        self.object_scale = s.float("object_scale", 1.0)
        self.noobject_scale = s.float("noobject_scale", 1.0)
        self.mask_scale = s.float("mask_scale", 1.0)
        self.class_scale = s.float("class_scale", 1.0)
        self.bias_match = s.int("bias_match", 0)
        tree = SoftmaxTree(s)
        self.softmax_tree = tree if tree else None  # upstream's l.softmax_tree (yolo9000's hierarchy)
        self.map = s.str("map", None)
        self.anchors = parse_region_anchors(s, self.n, 0.5)  # upstream's l.biases, default .5

    def forward(self, x, outputs=None):
        nb = x.shape[0]
        size = self.coords + self.classes + 1
        # flatten: (N, n*size, h*w) -> (N, h*w, n, size)
        y = x.reshape(nb, self.n * size, self.out_h * self.out_w).transpose(1, 2).reshape(nb, -1, self.n, size)
        parts = [y[..., :4], torch.sigmoid(y[..., 4:5])]
        rest = y[..., 5:]
        if self.softmax_tree is not None:
            sizes = self.softmax_tree.sizes()
            if sum(sizes) > self.classes:
                raise self.softmax_tree.error_for(f"the tree has {sum(sizes)} entries but classes={self.classes}")
            rest = softmax_groups(rest, sizes)
        elif self.softmax:
            rest = torch.cat([torch.softmax(rest[..., :self.classes], dim=-1), rest[..., self.classes:]], dim=-1)
        y = torch.cat(parts + [rest], dim=-1)
        return y.reshape(nb, self.out_c, self.out_h, self.out_w)

    def loss(self, output, truth, net):
        """forward_region_layer with truth (delta.py): its delta is already with respect
        to the layer's input (the flatten undone, the logistic's derivative applied)."""
        delta, stats = region_delta(self, output, truth, net.seen)
        return self.delta_loss(net.inputs[self.index], delta, stats.cost, net.flavor, stats)
