"""COCO results for `detector valid` with `eval=coco` (upstream: print_cocos and the
coco_ids table of src/detector.c), and, beyond upstream, their evaluation with pycocotools
when the data file names the ground truth (`coco_annotations=instances_val2017.json`).

Upstream writes `{"image_id":ID, "category_id":CAT, "bbox":[x, y, w, h], "score":S}`
lines, ID = atoi of the image's base name, CAT = coco_ids[class] (the 80 COCO classes in
coco.names order mapped to COCO's 1..90 category ids), the box in pixels clamped to the
image. With an annotation file the image ids come from it (matched by file name) and the
categories by class name, so any COCO-format dataset can be scored.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys

import numpy as np

from .common import EvalError, basecfg

F32 = np.float32

# COCO's category ids of the 80 classes of coco.names, in order (upstream's coco_ids).
COCO_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32,
            33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
            60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90)

COCO_METRICS = (
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.75      | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets= 10 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
)


def c_atoi(text: str) -> int:
    """C's atoi: optional blanks and sign, then digits up to the first non-digit; 0 if none."""
    s = text.lstrip(" \t\n\r\f\v")
    sign = 1
    if s[:1] in ("+", "-"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    digits = ""
    for ch in s:
        if not ch.isdigit() or not ch.isascii():
            break
        digits += ch
    if not digits:
        return 0
    v = sign * int(digits)
    return ((v + 2**31) % 2**32) - 2**31  # int overflow wraps as on upstream's platforms


class CocoTarget:
    """How classes and images become COCO ids: upstream's table, or an annotation file."""

    def __init__(self, names: list[str], classes: int, annotations: str | None = None):
        self.annotations = annotations
        self.by_file: dict[str, int] = {}
        self.cat_ids: list[int]
        self._warned: set[str] = set()
        if annotations:
            gt = load_annotations(annotations)
            for im in gt.get("images", []):
                self.by_file[os.path.basename(str(im.get("file_name", "")))] = int(im["id"])
            by_name = {str(c.get("name")): int(c["id"]) for c in gt.get("categories", [])}
            if all(n in by_name for n in names[:classes]):
                self.cat_ids = [by_name[n] for n in names[:classes]]
                return
            if classes > len(COCO_IDS):
                missing = [n for n in names[:classes] if n not in by_name][:3]
                raise EvalError(f"{annotations}: has no category named {', '.join(repr(m) for m in missing)} "
                                f"and there are more than {len(COCO_IDS)} classes for upstream's COCO id table")
        elif classes > len(COCO_IDS):
            raise EvalError(f"eval=coco: {classes} classes, but upstream's COCO category table has "
                            f"{len(COCO_IDS)}: name a COCO annotation file with coco_annotations= in the data file")
        self.cat_ids = list(COCO_IDS[:classes])

    def image_id(self, path: str) -> int:
        if self.by_file:
            base = os.path.basename(path)
            if base in self.by_file:
                return self.by_file[base]
            if base not in self._warned:
                self._warned.add(base)
                print(f"Warning: {path} is not an image of {self.annotations}; using id {c_atoi(basecfg(path))}",
                      file=sys.stderr)
        return c_atoi(basecfg(path))


def coco_lines(target: CocoTarget, path: str, dets, classes: int, w: int, h: int) -> list[str]:
    """Upstream print_cocos for one image: a line per (box, class) with prob > 0."""
    image_id = target.image_id(path)
    b = dets.boxes.astype(np.float64)
    xmin = (b[:, 0] - b[:, 2] / 2.0).astype(F32)
    xmax = (b[:, 0] + b[:, 2] / 2.0).astype(F32)
    ymin = (b[:, 1] - b[:, 3] / 2.0).astype(F32)
    ymax = (b[:, 1] + b[:, 3] / 2.0).astype(F32)
    xmin = np.where(xmin < 0, F32(0), xmin)
    ymin = np.where(ymin < 0, F32(0), ymin)
    xmax = np.where(xmax > w, F32(w), xmax)
    ymax = np.where(ymax > h, F32(h), ymax)
    bw = (xmax - xmin).astype(F32)
    bh = (ymax - ymin).astype(F32)
    lines = []
    probs = dets.probs
    for i, j in zip(*np.nonzero(probs[:, :classes] > 0)):
        lines.append(f'{{"image_id":{image_id}, "category_id":{target.cat_ids[j]}, '
                     f'"bbox":[{float(xmin[i]):f}, {float(ymin[i]):f}, {float(bw[i]):f}, {float(bh[i]):f}], '
                     f'"score":{float(probs[i, j]):f}}}')
    return lines


def coco_json_text(lines: list[str]) -> str:
    """The file upstream leaves: "[", the lines joined by ",\\n", "]" (an empty list is
    written as a valid empty JSON array, where upstream's seek-back breaks the file)."""
    if not lines:
        return "[\n]\n"
    return "[\n" + ",\n".join(lines) + "\n]\n"


def load_annotations(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except OSError as e:
        raise EvalError(f"{path}: cannot read the COCO annotation file: {e.strerror or e}") from None
    except ValueError as e:
        raise EvalError(f"{path}: not a JSON file: {e}") from None
    if not isinstance(doc, dict) or "images" not in doc or "annotations" not in doc or "categories" not in doc:
        raise EvalError(f"{path}: not a COCO annotation file (needs 'images', 'annotations', 'categories')")
    return doc


def evaluate_coco(annotations: str, results_json: str, image_ids: list[int], out=None) -> list[float]:
    """pycocotools' bbox evaluation of `results_json` on the images `image_ids`; prints
    pycocotools' summary (the 12 standard metrics) and returns them."""
    out = out or sys.stdout
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise EvalError("coco_annotations= needs pycocotools: pip install pycocotools") from None
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        gt = COCO(annotations)
    with open(results_json, "rb") as f:
        results = json.load(f)
    print(f"\n COCO evaluation of {results_json} against {annotations} ({len(set(image_ids))} images)", file=out)
    known = set(gt.imgs)
    results = [r for r in results if r.get("image_id") in known]
    image_ids = [i for i in image_ids if i in known]
    if not image_ids:
        raise EvalError(f"{annotations}: none of the evaluated images is in this annotation file")
    if not results:
        print(" no detections: every metric is 0", file=out)
        stats = [0.0] * 12
    else:
        with contextlib.redirect_stdout(quiet):
            dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = sorted(set(image_ids))
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats = [float(v) for v in ev.stats]
    for name, v in zip(COCO_METRICS, stats):
        print(f" {name} = {v:0.3f}", file=out)
    out.flush()
    return stats
