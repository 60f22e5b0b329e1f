"""Synthetic training images for the data-pipeline tests: filled rectangles on a plain
background, each with its label line, so a box can be checked by the colour inside it."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

# (class, x0, y0, x1, y1, rgb): pixel columns x0..x1-1, rows y0..y1-1 of a 200 x 150 image
RECTS = (
    (0, 20, 15, 80, 60, (230, 30, 30)),
    (1, 110, 20, 180, 75, (30, 220, 40)),
    (2, 40, 90, 150, 140, (40, 60, 230)),
)
COLOURS = {cls: np.array(rgb, dtype=np.float32) / 255 for cls, *_, rgb in RECTS}
BACKGROUND = (90, 90, 90)


def write_scene(directory: Path, name: str = "scene.png", size=(200, 150), rects=RECTS,
                background=BACKGROUND, label: bool = True) -> str:
    """Write the image (and its label file beside it); returns the image path."""
    w, h = size
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[...] = background
    lines = []
    for cls, x0, y0, x1, y1, rgb in rects:
        img[y0:y1, x0:x1] = rgb
        lines.append(f"{cls} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}")
    path = Path(directory) / name
    cv2.imwrite(str(path), img[:, :, ::-1])
    if label:
        path.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    return str(path)


def boxes_of(truth: np.ndarray) -> np.ndarray:
    """The rows before the first zero x."""
    truth = np.asarray(truth)
    zero = np.flatnonzero(truth[:, 0] == 0)
    return truth[: zero[0] if len(zero) else len(truth)]


def box_interior(row, w: int, h: int, margin: int = 2):
    """Pixel slices strictly inside a truth row's box (empty if too small)."""
    cx, cy, bw, bh = (float(v) for v in row[:4])
    x0, x1 = math.ceil((cx - bw / 2) * w) + margin, math.floor((cx + bw / 2) * w) - margin
    y0, y1 = math.ceil((cy - bh / 2) * h) + margin, math.floor((cy + bh / 2) * h) - margin
    if x1 <= x0 or y1 <= y0:
        return None
    return slice(y0, y1), slice(x0, x1)


def box_colour_errors(x: np.ndarray, truth: np.ndarray, colours=COLOURS, margin: int = 2):
    """(checked, errors): for every box with an interior, the largest difference between
    the mean colour inside it and its class colour."""
    _, h, w = x.shape
    checked, errors = 0, []
    for row in boxes_of(truth):
        inner = box_interior(row, w, h, margin)
        if inner is None:
            continue
        mean = x[:, inner[0], inner[1]].reshape(x.shape[0], -1).mean(axis=1)
        errors.append(float(np.abs(mean - colours[int(row[4])]).max()))
        checked += 1
    return checked, errors
