"""The [Gaussian_yolo] layer: layer.py (parse_gaussian_yolo, make_gaussian_yolo_layer,
forward_gaussian_yolo_layer) and delta.py (its training part: l.delta and statistics)."""
from .layer import GaussianYolo

__all__ = ["GaussianYolo"]
