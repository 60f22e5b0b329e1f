"""The [yolo] layer: layer.py (parse_yolo, make_yolo_layer, forward_yolo_layer) and delta.py
(forward_yolo_layer's training part: its l.delta and statistics)."""
from .layer import FLT_MAX, IOU_LOSSES, Yolo, parse_anchors, read_head, read_training_keys

__all__ = ["FLT_MAX", "IOU_LOSSES", "Yolo", "parse_anchors", "read_head", "read_training_keys"]
