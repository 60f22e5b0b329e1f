"""Upstream: validate_detector_recall (src/detector.c): `detector recall`.

How many ground-truth boxes some proposal covers: every image of the `valid` list
(default data/train.txt), stretched to the network size, get_network_boxes with thresh
0.001 (relative boxes), class-agnostic NMS on objectness at 0.4 (do_nms_obj); a proposal
is a box with objectness > 0.001; a truth box is recalled when the best IoU of a proposal
with it exceeds 0.5. After each image upstream prints, on stderr,

    IMAGE CORRECT TOTAL<TAB>RPs/Img: R<TAB>IOU: A%<TAB>Recall:C%

(running totals: recalled boxes, truth boxes, proposals per image, mean best IoU).
"""
from __future__ import annotations

import sys

import numpy as np

from ..box import box_iou
from ..outputs.detections import network_boxes, nms_obj
from .common import (F32, eval_mode, iter_network_inputs, load_data, load_eval_network, data_str,
                     network_classes, predict_many, read_truth, read_valid_list)

RECALL_THRESH = 0.001
RECALL_IOU = 0.5
RECALL_NMS = 0.4


def _pct(v: float) -> str:
    if v != v:
        return "-nan"
    return f"{v:.2f}"


def validate_detector_recall(datacfg, cfgfile: str, weightfile: str | None, err=None, net=None, out=None,
                             device=None) -> dict:
    """Prints upstream's running recall lines (stderr by default, as upstream) and
    returns the totals {"correct", "total", "proposals", "avg_iou", "recall"}."""
    err = err or sys.stderr
    if net is None:
        net = load_eval_network(cfgfile, weightfile, device)
    d = load_data(datacfg)
    valid_images = data_str(d, "valid", "data/train.txt")
    paths = read_valid_list(valid_images, "valid")
    classes = network_classes(net)
    o = net.options
    thresh = F32(RECALL_THRESH)
    total = correct = proposals = 0
    avg_iou = F32(0)
    with eval_mode(net):
        for g in iter_network_inputs(paths, o.width, o.height, False):
            raw = predict_many(net, [g.sized])[0]
            dets, _, _, _ = network_boxes(net, raw, RECALL_THRESH, 0.5, o.width, o.height, False, relative=True)
            dets = nms_obj(dets, 1, RECALL_NMS)
            truth = read_truth(g.path, classes, out=out)
            live = dets.objectness > thresh
            proposals += int(live.sum())
            if len(truth):
                iou = box_iou(dets.boxes[:, None, :], truth.boxes[None, :, :]) if len(dets) else \
                    np.zeros((0, len(truth)), F32)
                for j in range(len(truth)):
                    total += 1
                    cand = iou[live, j] if len(dets) else np.zeros(0, F32)
                    best = F32(max(F32(0), cand.max())) if cand.size else F32(0)
                    avg_iou = F32(avg_iou + best)
                    if best > F32(RECALL_IOU):
                        correct += 1
            i = g.index
            with np.errstate(invalid="ignore", divide="ignore"):
                rps = float(F32(proposals) / F32(i + 1))
                iou_pct = float(avg_iou * F32(100) / F32(total)) if total else float("nan")
                rec = 100.0 * correct / total if total else float("nan")
            print(f"{i:5d} {correct:5d} {total:5d}\tRPs/Img: {rps:.2f}\tIOU: {_pct(iou_pct)}%\t"
                  f"Recall:{_pct(rec)}%", file=err, flush=True)
    n = len(paths)
    return {"correct": correct, "total": total, "proposals": proposals, "images": n,
            "avg_iou": float(avg_iou / F32(total)) if total else 0.0,
            "recall": correct / total if total else 0.0}
