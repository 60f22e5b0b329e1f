#!/usr/bin/env python3
"""Generate data/demo/figures: a small synthetic classification dataset (4 classes: circle,
square, triangle, cross), one figure per image on a noisy background, the class name in the
file name (upstream's classifier finds its labels in the image paths), a train/valid split,
labels and figures.data.

    python scripts/make_classifier_demo.py [--n-train 400] [--n-valid 200] [--size 32] [--seed 1]

Deterministic for a given seed; the generated files are committed, so this only needs to run
again to change the dataset. The shapes are drawn as in scripts/make_demo.py (the detector
demo), at a random size, position and colour.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from make_demo import background, draw

CLASSES = ["circle", "square", "triangle", "cross"]
ROOT = Path(__file__).resolve().parent.parent / "data" / "demo" / "figures"


def make(rng, size: int, cls: int) -> np.ndarray:
    img = background(rng, size)
    r = int(rng.integers(size // 5, size // 3 + 1))
    cx, cy = (int(v) for v in rng.integers(r + 1, size - r - 1, 2))
    if cls < 3:
        draw(img, rng, cls, cx, cy, r)
    else:
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        t = max(2, r // 2)
        cv2.rectangle(img, (cx - r, cy - t // 2), (cx + r, cy + t // 2), colour, -1)
        cv2.rectangle(img, (cx - t // 2, cy - r), (cx + t // 2, cy + r), colour, -1)
    return img


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=400)
    ap.add_argument("--n-valid", type=int, default=200)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    lists = {}
    for split, n in (("train", a.n_train), ("valid", a.n_valid)):
        folder = ROOT / split
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.png"):
            stale.unlink()
        names = []
        for i in range(n):
            cls = i % len(CLASSES)
            name = f"{i:04d}_{CLASSES[cls]}.png"
            cv2.imwrite(str(folder / name), make(rng, a.size, cls))
            names.append(f"figures/{split}/{name}")
        lists[split] = names
    demo = ROOT.parent
    (demo / "figures_train.txt").write_text("".join(p + "\n" for p in lists["train"]))
    (demo / "figures_valid.txt").write_text("".join(p + "\n" for p in lists["valid"]))
    (demo / "figures.labels").write_text("".join(c + "\n" for c in CLASSES))
    (demo / "figures.data").write_text(
        f"classes={len(CLASSES)}\ntrain=figures_train.txt\nvalid=figures_valid.txt\nlabels=figures.labels\n"
        "names=figures.labels\nbackup=backup/\ntop=2\n")


if __name__ == "__main__":
    main()
