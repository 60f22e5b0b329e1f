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

from .delta import gaussian_yolo_delta
from .. import register
from ..base import BuildContext, Layer
from ..region import parse_region_anchors
from ..yolo import Yolo, read_head, read_training_keys

NMS_KINDS = ("default", "greedynms", "diounms", "cornersnms")
YOLO_POINTS = ("center", "left_top", "right_bottom")


@register("Gaussian_yolo")
class GaussianYolo(Layer):
    type_name = "Gaussian_yolo"
    type_id = 29
    is_detection_output = is_detector_head = produces_loss = True
    backward_surrogate = Yolo.backward_surrogate  # the same delta_normalizer rule (delta.py)

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        read_head(self, ctx, 9, mask_below_num=True)
        read_training_keys(self, s)
        self.uc_normalizer = s.float("uc_normalizer", 1.0)
        kind = s.str("nms_kind", "default")
        self.nms_kind = kind if kind in NMS_KINDS else "default"
        point = s.str("yolo_point", "center")
        self.yolo_point = point if point in YOLO_POINTS else "center"
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

    def loss(self, output, truth, net):
        """forward_gaussian_yolo_layer with truth (delta.py); the delta goes to the input."""
        delta, stats = gaussian_yolo_delta(self, output, truth, net.netw, net.neth)
        return self.delta_loss(net.inputs[self.index], delta, stats.cost, net.flavor, stats)
