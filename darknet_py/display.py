"""Upstream: show_image / wait_key_cv / destroy_all_windows_cv (src/image_opencv.cpp).

Windows where there is a display (X11 or Wayland, and an OpenCV built with a GUI), nothing
otherwise: the callers then write files, as upstream's build without OpenCV does.
"""
from __future__ import annotations

import os

import numpy as np


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def show_image(name: str, im: np.ndarray, wait_ms: int = 1) -> bool:
    """Show a (C, H, W) float image in [0, 1] in the window `name`; False where no window can
    be opened."""
    if not has_display():
        return False
    import cv2
    from .image import to_bgr_uint8
    try:
        cv2.imshow(name, to_bgr_uint8(im))
        cv2.waitKey(wait_ms)
        return True
    except cv2.error:
        return False


def wait_key(ms: int = 0) -> int:
    """wait_key_cv / wait_until_press_key_cv (0: until a key is pressed)."""
    import cv2
    try:
        return cv2.waitKey(ms)
    except cv2.error:
        return -1
