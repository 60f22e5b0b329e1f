"""Upstream: parse_yolo (src/parser.c), make_yolo_layer / forward_yolo_layer (src/yolo_layer.c).

Output layout is upstream's l.output: (N, A, 5+C, H, W) flattened; in the forward pass x, y,
objectness and class scores go through the logistic (unless new_coords, where the previous
layer already applied it) and x, y are scaled: x*scale_x_y - (scale_x_y-1)/2.
"""
from __future__ import annotations

import warnings

import torch

from .delta import yolo_delta
from .. import register
from ..base import BuildContext, Layer
from ..delta_common import FLT_MAX

IOU_LOSSES = ("mse", "iou", "giou", "diou", "ciou")


def parse_anchors(s, total: int, mask: list[int]) -> list[float]:
    """Anchors as upstream's parse_yolo stores them in l.biases, with its tolerance.

    Upstream keeps 0.5 for anchor numbers the cfg does not give and ignores numbers past
    2*num (two stock cfgs rely on this: cspx-p7-mish lists 20 anchors with num=16 and masks
    16..19, cspx-p7-mish_hp loses one number to a missing comma); we warn about both. A
    list too short to give the layer as many anchors as its mask uses is an error.
    """
    need = 2 * max(total, max(mask) + 1 if mask else 0)
    biases = [0.5] * need
    if not s.has("anchors"):
        return biases
    values = s.floats("anchors")
    line = s.find("anchors").line
    if len(values) < 2 * len(mask):
        raise s.error("anchors", f"has {len(values)} numbers but num={total} needs {2 * total} "
                                 f"(mask={','.join(map(str, mask))} uses {len(mask)} anchors)", line)
    if len(values) != 2 * total:
        warnings.warn(f"{s.path}:{line}: [{s.name}] key 'anchors': {len(values)} numbers but num={total} uses "
                      f"{2 * total}; missing ones are 0.5 as upstream", stacklevel=3)
    if need > 2 * total:
        warnings.warn(f"{s.path}:{s.find('mask').line}: [{s.name}] key 'mask': uses anchor {max(mask)} but "
                      f"num={total}; taking it from the anchors listed", stacklevel=3)
    n = min(len(values), need)
    biases[:n] = values[:n]
    return biases


def read_head(layer: Layer, ctx: BuildContext, per_anchor: int, mask_below_num: bool) -> None:
    """classes, num, mask, max and the output shape: A*(per_anchor + classes) channels that
    must equal what the layer before outputs. Shared by [yolo] and [Gaussian_yolo]."""
    s = ctx.section
    layer.classes = s.int("classes", 20)
    layer.total = s.int("num", 1)
    if layer.classes < 0 or layer.total < 1:
        raise s.error("num", "num must be >= 1 and classes >= 0")
    layer.mask = s.ints("mask") if s.has("mask") else list(range(layer.total))
    for m in layer.mask:
        if m < 0:
            raise s.error("mask", f"mask value {m} is negative")
        if mask_below_num and m >= layer.total:
            raise s.error("mask", f"mask value {m} is outside 0..num-1 (num={layer.total})")
    layer.n = len(layer.mask)
    layer.max_boxes = s.int("max", 200)
    c = layer.n * (layer.classes + per_anchor)
    layer.set_output(ctx.w, ctx.h, c)
    layer.c = c
    if layer.outputs != ctx.inputs:
        raise s.error("classes", f"the layer before has {ctx.c} filters but [{s.name}] with {layer.n} masks and "
                                 f"{layer.classes} classes needs {layer.n}*({layer.classes}+{per_anchor}) = {c} "
                                 f"(input {ctx.w}x{ctx.h}x{ctx.c})")
    layer.inputs = layer.outputs


def read_training_keys(layer: Layer, s) -> None:
    """The loss keys [yolo] and [Gaussian_yolo] share, with upstream's defaults."""
    layer.max_delta = s.float("max_delta", FLT_MAX)
    layer.counters_per_class = s.ints("counters_per_class") if s.has("counters_per_class") else None
    if layer.counters_per_class is not None and len(layer.counters_per_class) != layer.classes:
        raise s.error("counters_per_class", f"has {len(layer.counters_per_class)} values but classes={layer.classes}")
    layer.label_smooth_eps = s.float("label_smooth_eps", 0.0)
    layer.scale_x_y = s.float("scale_x_y", 1.0)
    layer.objectness_smooth = s.int("objectness_smooth", 0)
    layer.iou_normalizer = s.float("iou_normalizer", 0.75)
    layer.obj_normalizer = s.float("obj_normalizer", 1.0)
    layer.cls_normalizer = s.float("cls_normalizer", 1.0)
    layer.delta_normalizer = s.float("delta_normalizer", 1.0)
    # upstream maps any unknown iou_loss name to IOU
    loss = s.str("iou_loss", "mse")
    layer.iou_loss = loss if loss in IOU_LOSSES else "iou"
    layer.iou_thresh_kind = s.choice("iou_thresh_kind", ("iou", "giou", "diou", "ciou"), "iou")
    layer.beta_nms = s.float("beta_nms", 0.6)
    layer.jitter = s.float("jitter", 0.2)
    layer.resize = s.float("resize", 1.0)
    layer.ignore_thresh = s.float("ignore_thresh", 0.5)
    layer.truth_thresh = s.float("truth_thresh", 1.0)
    layer.iou_thresh = s.float("iou_thresh", 1.0)
    layer.random = s.float("random", 0.0)


@register("yolo")
class Yolo(Layer):
    type_name = "yolo"
    type_id = 28
    is_detection_output = is_detector_head = produces_loss = True

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        read_head(self, ctx, 5, mask_below_num=False)
        self.show_details = s.int("show_details", 1)
        read_training_keys(self, s)
        self.new_coords = s.int("new_coords", 0)
        kind = s.str("nms_kind", "default")
        # upstream's parse_yolo knows greedynms and diounms; anything else is the default NMS
        self.nms_kind = kind if kind in ("greedynms", "diounms") else "default"
        self.focal_loss = s.int("focal_loss", 0)
        self.track_history_size = s.int("track_history_size", 5)
        self.sim_thresh = s.float("sim_thresh", 0.8)
        self.dets_for_track = s.int("dets_for_track", 1)
        self.dets_for_show = s.int("dets_for_show", 1)
        self.track_ciou_norm = s.float("track_ciou_norm", 0.01)
        emb = s.int("embedding_layer", 999999)
        self.embedding_layer = None
        if emb != 999999:
            self.embedding_layer = ctx.layer_index("embedding_layer", emb)
        self.map = s.str("map", "") or None
        self.anchors = parse_anchors(s, self.total, self.mask)

    def forward(self, x, outputs=None):
        n = x.shape[0]
        a, k, h, w = self.n, self.classes + 5, self.out_h, self.out_w
        x = x.reshape(n, a, k, h, w)
        if self.new_coords:
            xy, rest = x[:, :, :2], x[:, :, 2:]
        else:
            xy = torch.sigmoid(x[:, :, :2])
            rest = torch.cat([x[:, :, 2:4], torch.sigmoid(x[:, :, 4:])], 2)
        if self.scale_x_y != 1.0:
            xy = xy * self.scale_x_y - 0.5 * (self.scale_x_y - 1)
        return torch.cat([xy, rest], 2).reshape(n, a * k, h, w)

    def loss(self, output, truth, net):
        """forward_yolo_layer with truth (delta.py); the delta goes to the layer's input."""
        # the statistics are read from the device when the trainer asks for them (after it has
        # started the backward)
        delta, stats = yolo_delta(self, output, truth, net.netw, net.neth, defer=True)
        return self.delta_loss(net.inputs[self.index], delta, None, net.flavor, stats)

    def backward_surrogate(self, inp, delta, flavor):
        """backward_yolo_layer: l.delta straight to the previous layer; the GPU build's
        backward_yolo_layer_gpu scales it by delta_normalizer (its loss_scale factor is
        undone by the update, train/sgd.py); the CPU build does not."""
        if flavor != "cpu" and self.delta_normalizer != 1.0:
            delta = delta * self.delta_normalizer
        return Layer.backward_surrogate(self, inp, delta, flavor)
