"""Upstream: replace_image_to_label (src/utils.c): where an image's label file lives."""
from __future__ import annotations

IMAGE_EXTENSIONS = (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".bmp", ".BMP", ".ppm", ".PPM", ".tiff", ".TIFF")
_DIRS = (("/images/train2017/", "/labels/train2017/"), ("/images/val2017/", "/labels/val2017/"),
         ("/JPEGImages/", "/labels/"), ("\\images\\train2017\\", "\\labels\\train2017\\"),
         ("\\images\\val2017\\", "\\labels\\val2017\\"), ("\\images\\train2014\\", "\\labels\\train2014\\"),
         ("\\images\\val2014\\", "\\labels\\val2014\\"), ("/images/train2014/", "/labels/train2014/"),
         ("/images/val2014/", "/labels/val2014/"), ("\\JPEGImages\\", "\\labels\\"))


def image_to_label_path(path: str) -> str:
    out = path
    for a, b in _DIRS:
        out = out.replace(a, b, 1) if a in out else out
    out = out.strip()
    for ext in IMAGE_EXTENSIONS:
        # upstream replaces the extension wherever it occurs last in the name
        i = out.rfind(ext)
        if i >= 0 and ext in out:
            out = out[:i] + ".txt" + out[i + len(ext):]
    return out
