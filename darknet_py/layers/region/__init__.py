"""The [region] layer: layer.py (parse_region, make_region_layer, forward_region_layer) and
delta.py (forward_region_layer's training part: its l.delta and statistics)."""
from .layer import Region, parse_region_anchors

__all__ = ["Region", "parse_region_anchors"]
