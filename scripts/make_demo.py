#!/usr/bin/env python3
"""Generate data/demo/shapes: a small synthetic detection dataset (3 classes: circle, square,
triangle) with YOLO labels beside the images, a train/valid split and obj.data.

    python scripts/make_demo.py [--n-train 240] [--n-valid 100] [--size 128] [--seed 1]

Deterministic for a given seed; the generated files are committed, so this only needs to run
again to change the dataset. The validation set is large (100 images, about 200 objects) so
that the mAP the demo prints moves by a few points between seeds and machines, not by the
five points one box is worth among 20.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

CLASSES = ["circle", "square", "triangle"]
ROOT = Path(__file__).resolve().parent.parent / "data" / "demo" / "shapes"


def background(rng, size):
    base = rng.integers(30, 200, 3)
    img = np.clip(base + rng.normal(0, 18, (size, size, 3)), 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(img, (5, 5), 0)


def draw(img, rng, cls, cx, cy, r):
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    if cls == 0:
        cv2.circle(img, (cx, cy), r, colour, -1, cv2.LINE_AA)
        return cx - r, cy - r, cx + r, cy + r
    if cls == 1:
        cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), colour, -1)
        return cx - r, cy - r, cx + r, cy + r
    pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
    cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
    return cx - r, cy - r, cx + r, cy + r


def make(i, rng, size):
    img = background(rng, size)
    boxes = []
    for _ in range(int(rng.integers(1, 4))):
        for _try in range(20):
            r = int(rng.integers(size // 10, size // 4))
            cx, cy = (int(v) for v in rng.integers(r + 1, size - r - 1, 2))
            box = (cx - r, cy - r, cx + r, cy + r)
            if all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for _, b in boxes):
                cls = int(rng.integers(0, 3))
                boxes.append((cls, draw(img, rng, cls, cx, cy, r)))
                break
    lines = []
    for cls, (x1, y1, x2, y2) in boxes:
        lines.append(f"{cls} {(x1 + x2) / 2 / size:.6f} {(y1 + y2) / 2 / size:.6f} "
                     f"{(x2 - x1) / size:.6f} {(y2 - y1) / size:.6f}\n")
    return img, "".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=240)
    ap.add_argument("--n-valid", type=int, default=100)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    img_dir = ROOT / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for stale in img_dir.glob("shape_*"):
        stale.unlink()
    for i in range(a.n_train + a.n_valid):
        img, labels = make(i, rng, a.size)
        name = f"shape_{i:03d}"
        cv2.imwrite(str(img_dir / f"{name}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        (img_dir / f"{name}.txt").write_text(labels)
        names.append(f"shapes/images/{name}.jpg")
    n_valid = a.n_valid
    (ROOT.parent / "shapes_train.txt").write_text("".join(p + "\n" for p in names[n_valid:]))
    (ROOT.parent / "shapes_valid.txt").write_text("".join(p + "\n" for p in names[:n_valid]))
    (ROOT.parent / "shapes.names").write_text("".join(c + "\n" for c in CLASSES))
    (ROOT.parent / "shapes.data").write_text(
        f"classes={len(CLASSES)}\ntrain=shapes_train.txt\nvalid=shapes_valid.txt\nnames=shapes.names\nbackup=backup/\n")


if __name__ == "__main__":
    main()
