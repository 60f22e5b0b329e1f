"""Upstream: replace_image_to_label (src/utils.c): where an image's label file lives.

Kept for existing imports; the implementation lives in darknet_py.data.labels.
"""
from __future__ import annotations

from .data.labels import IMAGE_EXTENSIONS, image_to_label_path

__all__ = ["IMAGE_EXTENSIONS", "image_to_label_path"]
