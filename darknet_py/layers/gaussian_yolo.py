"""Upstream: parse_gaussian_yolo (src/parser.c), make_gaussian_yolo_layer /
forward_gaussian_yolo_layer (src/gaussian_yolo_layer.c).

Gaussian YOLOv3: like [yolo] but each anchor has 9 + classes channels: mu_x, sigma_x,
mu_y, sigma_y, mu_w, sigma_w, mu_h, sigma_h, objectness, classes. Upstream's CPU forward
applies the logistic to everything except mu_w and mu_h, and the scale_x_y adjustment
x*s - (s-1)/2 to mu_x and mu_y only. Output layout is upstream's l.output:
(N, A, 9+C, H, W) flattened.
"""
from __future__ import annotations

import torch

from . import register
from .base import BuildContext, Layer
from .region import parse_region_anchors
from .yolo import IOU_LOSSES

NMS_KINDS = ("default", "greedynms", "diounms", "cornersnms")
YOLO_POINTS = ("center", "left_top", "right_bottom")


@register("Gaussian_yolo")
class GaussianYolo(Layer):
    type_name = "Gaussian_yolo"
    type_id = 29

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        self.classes = s.int("classes", 20)
        self.max_boxes = s.int("max", 200)
        self.total = s.int("num", 1)
        if self.classes < 0 or self.total < 1:
            raise s.error("num", "num must be >= 1 and classes >= 0")
        self.mask = s.ints("mask") if s.has("mask") else list(range(self.total))
        for m in self.mask:
            if not 0 <= m < self.total:
                raise s.error("mask", f"mask value {m} is outside 0..num-1 (num={self.total})")
        self.n = len(self.mask)
        c = self.n * (self.classes + 9)
        self.set_output(ctx.w, ctx.h, c)
        self.c = c
        if self.outputs != ctx.inputs:
            raise s.error("classes", f"the layer before has {ctx.c} filters but [Gaussian_yolo] with {self.n} masks "
                                     f"and {self.classes} classes needs {self.n}*({self.classes}+9) = {c} "
                                     f"(input {ctx.w}x{ctx.h}x{ctx.c})")
        self.inputs = self.outputs
        self.max_delta = s.float("max_delta", 3.4028234663852886e38)
        self.counters_per_class = s.ints("counters_per_class") if s.has("counters_per_class") else None
        if self.counters_per_class is not None and len(self.counters_per_class) != self.classes:
            raise s.error("counters_per_class", f"has {len(self.counters_per_class)} values but classes={self.classes}")
        self.label_smooth_eps = s.float("label_smooth_eps", 0.0)
        self.scale_x_y = s.float("scale_x_y", 1.0)
        self.objectness_smooth = s.int("objectness_smooth", 0)
        self.uc_normalizer = s.float("uc_normalizer", 1.0)
        self.iou_normalizer = s.float("iou_normalizer", 0.75)
        self.obj_normalizer = s.float("obj_normalizer", 1.0)
        self.cls_normalizer = s.float("cls_normalizer", 1.0)
        self.delta_normalizer = s.float("delta_normalizer", 1.0)
        loss = s.str("iou_loss", "mse")
        self.iou_loss = loss if loss in IOU_LOSSES else "iou"  # upstream: any other name is IOU
        self.iou_thresh_kind = s.choice("iou_thresh_kind", ("iou", "giou", "diou", "ciou"), "iou")
        self.beta_nms = s.float("beta_nms", 0.6)
        kind = s.str("nms_kind", "default")
        self.nms_kind = kind if kind in NMS_KINDS else "default"
        point = s.str("yolo_point", "center")
        self.yolo_point = point if point in YOLO_POINTS else "center"
        self.jitter = s.float("jitter", 0.2)
        self.resize = s.float("resize", 1.0)
        self.ignore_thresh = s.float("ignore_thresh", 0.5)
        self.truth_thresh = s.float("truth_thresh", 1.0)
        self.iou_thresh = s.float("iou_thresh", 1.0)
        self.random = s.float("random", 0.0)
        self.map = s.str("map", None)
        self.anchors = parse_region_anchors(s, self.total, 0.5, allow_extra=False)  # upstream's l.biases, default .5

    def forward(self, x, outputs=None):
        nb = x.shape[0]
        a, k, h, w = self.n, self.classes + 9, self.out_h, self.out_w
        x = x.reshape(nb, a, k, h, w)
        sig = torch.sigmoid(x)
        s = self.scale_x_y
        mu_x, mu_y = sig[:, :, 0:1], sig[:, :, 2:3]
        if s != 1.0:
            mu_x = mu_x * s - 0.5 * (s - 1)
            mu_y = mu_y * s - 0.5 * (s - 1)
        y = torch.cat([mu_x, sig[:, :, 1:2], mu_y, sig[:, :, 3:4], x[:, :, 4:5], sig[:, :, 5:6],
                       x[:, :, 6:7], sig[:, :, 7:]], dim=2)
        return y.reshape(nb, a * k, h, w)
