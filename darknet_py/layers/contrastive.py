"""Upstream: parse_contrastive (src/parser.c), make_contrastive_layer /
forward_contrastive_layer (src/softmax_layer.c).

The contrastive (embedding) loss of a tracking model; it points at a [yolo] layer with
yolo_layer= and reads the embeddings (its input) of every anchor of every cell. Upstream's
forward does nothing outside training, so its output buffer stays all zeros; so does ours.
Upstream's summary shows the input shape and a 0x0x0 output, n = the yolo layer's anchors.
"""
from __future__ import annotations

from . import register
from .base import BuildContext, Layer


@register("contrastive")
class Contrastive(Layer):
    type_name = "none"  # upstream's name table has no entry for CONTRASTIVE
    type_id = 38

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        self.classes = s.int("classes", 1000)
        yolo_id = s.int("yolo_layer", 0)
        if yolo_id == 0:
            # upstream dereferences a null yolo layer here
            raise s.error("yolo_layer", "a [contrastive] layer needs yolo_layer= (the [yolo] layer it belongs to)")
        idx = ctx.layer_index("yolo_layer", yolo_id)
        yolo = ctx.layers[idx]
        if yolo.type_id != 28:
            raise s.error("yolo_layer", f"layer {idx} is a [{yolo.type_name}] layer, not [yolo]")
        self.yolo_layer = idx
        self.detection = 1
        self.max_boxes = yolo.max_boxes
        self.n = yolo.n
        self.classes = yolo.classes
        self.inputs = self.outputs = ctx.inputs
        if self.n * ctx.h * ctx.w == 0:
            raise s.error("yolo_layer", "the input must be an image")
        self.embedding_size = ctx.inputs // (self.n * ctx.h * ctx.w)
        yolo_emb = None
        if getattr(yolo, "embedding_layer", None) is not None:
            yolo_emb = ctx.layers[yolo.embedding_layer].n // yolo.n
        if self.embedding_size != yolo_emb:
            raise s.error("yolo_layer", f"embedding size {self.embedding_size} (inputs / (anchors*h*w)) differs from "
                                        f"the [yolo] layer's ({yolo_emb}): both must use the same "
                                        f"[convolutional] layer (embedding_layer=)")
        self.temperature = s.float("temperature", 1.0)
        self.steps = ctx.net.time_steps
        self.cls_normalizer = s.float("cls_normalizer", 1.0)
        self.max_delta = s.float("max_delta", 3.4028234663852886e38)
        self.contrastive_neg_max = s.int("contrastive_neg_max", 3)

    def forward(self, x, outputs=None):
        return x.new_zeros(x.shape[0], self.outputs, 1, 1)
