"""Upstream: validate_detector_map (src/detector.c): `detector map` and training's `-map`.

Every image of the data file's `valid` list goes through the network at the network's
size (stretched, or letterboxed with letter_box), then upstream's get_network_boxes with
thresh 0.005 and hier_thresh 0, then the cfg's NMS at 0.45. Each (box, class) with a
non-zero probability is a detection; it is matched to the ground-truth box of that class
with the highest IoU above iou_thresh (the first on ties), and a detection whose best
match is a `difficult` object (the `difficult` list of the data file, VOC 2007) is dropped.

Then, as upstream:

* at conf_thresh (`-thresh`): a detection above it is a TP when it matched a truth box
  that no earlier detection of the same image (in upstream's array order, whatever its
  probability) matched; otherwise an FP. Its IoU adds to the average IoU.
* all detections sorted by probability (stable: equal probabilities keep image order);
  down that ranking the first detection of a truth box is a TP, any other an FP, giving
  each class's precision/recall curve.
* AP per class: with points=0 the area under the curve at each unique recall, with the
  precision made monotone from the right (ImageNet, VOC 2010-2012); with points=N the
  mean of N precisions, each the best precision at recall >= i/(N-1) (11: VOC 2007,
  101: COCO). mAP is their mean over all classes.

The report printed is upstream's, line for line, and the same text comes out of
training's `-map` run (the same function, handed the training network).
"""
from __future__ import annotations

import sys
import time

import numpy as np

from ..box import box_iou
from ..outputs.detections import network_boxes
from .common import (F32, EvalError, announce_detection_layers, batched, check_names, c_nan_str, data_str,
                     default_batch, empty_truth, eval_mode, iter_network_inputs, load_data, network_classes,
                     nms_in_upstream_order, predict_many, read_names_file, read_truth, read_valid_list)

MAP_DET_THRESH = 0.005
MAP_NMS = 0.45


class _Collector:
    """The detection list and the at-threshold counts of upstream's per-image loop."""

    def __init__(self, classes: int, thresh: float, iou_thresh: float):
        self.classes = classes
        self.thresh = F32(thresh)
        self.iou_thresh = F32(iou_thresh)
        self.probs: list[np.ndarray] = []  # per image: float32 probabilities of kept detections
        self.cls: list[np.ndarray] = []
        self.truth_index: list[np.ndarray] = []  # global unique truth index or -1
        self.unique_truth_count = 0
        self.truth_classes_count = np.zeros(classes, np.int64)
        self.avg_iou = F32(0)
        self.tp_for_thresh = 0
        self.fp_for_thresh = 0
        self.tp_per_class = np.zeros(classes, np.int64)
        self.fp_per_class = np.zeros(classes, np.int64)
        self.avg_iou_per_class = np.zeros(classes, F32)

    def add_image(self, dets, truth, truth_dif) -> None:
        classes = self.classes
        np.add.at(self.truth_classes_count, truth.ids, 1)
        probs = dets.probs[:, :classes]
        ii, cc = np.nonzero(probs > 0)  # row-major: upstream's box loop, then its class loop
        p = probs[ii, cc]
        npairs = ii.size
        truth_index = np.full(npairs, -1, np.int64)
        max_iou = np.zeros(npairs, F32)
        dropped = np.zeros(npairs, bool)
        if npairs and len(truth):
            iou = box_iou(dets.boxes[:, None, :], truth.boxes[None, :, :])[ii]  # (pairs, truths)
            ok = (iou > self.iou_thresh) & (truth.ids[None, :] == cc[:, None]) & (iou > 0)
            cand = np.where(ok, iou, F32(-1))
            j = np.argmax(cand, axis=1)  # the first of the highest, as upstream's strict '>'
            best = cand[np.arange(npairs), j]
            hit = best > 0
            truth_index[hit] = self.unique_truth_count + j[hit]
            max_iou[hit] = best[hit]
        if npairs and len(truth_dif):
            iou_dif = box_iou(dets.boxes[:, None, :], truth_dif.boxes[None, :, :])[ii]
            dropped = ((iou_dif > self.iou_thresh) & (truth_dif.ids[None, :] == cc[:, None])).any(axis=1)
            dropped &= truth_index < 0
        # at conf_thresh: a TP needs a truth box no earlier kept detection of this image matched
        above = (p > self.thresh).tolist()
        seen: set[int] = set()
        for k, (t, c) in enumerate(zip(truth_index.tolist(), cc.tolist())):
            if above[k]:
                if t > -1 and t not in seen:
                    self.avg_iou = F32(self.avg_iou + max_iou[k])
                    self.tp_for_thresh += 1
                    self.avg_iou_per_class[c] = F32(self.avg_iou_per_class[c] + max_iou[k])
                    self.tp_per_class[c] += 1
                else:
                    self.fp_for_thresh += 1
                    self.fp_per_class[c] += 1
            if not dropped[k]:
                seen.add(t)
        keep = ~dropped
        self.probs.append(p[keep].astype(F32))
        self.cls.append(cc[keep].astype(np.int64))
        self.truth_index.append(truth_index[keep])
        self.unique_truth_count += len(truth)


def _average_precision(recall: np.ndarray, precision: np.ndarray, points: int) -> float:
    """AP of one class from its curve at the ranks of its own detections (in rank order).

    Between two of its detections a class's precision and recall stay as they were, so
    upstream's walk over all ranks reduces to these states plus the state before the
    first one (precision = recall = 0); additions happen in upstream's order."""
    m = recall.size
    if m == 0:
        return 0.0
    if points == 0:
        ap = 0.0
        # max of the precisions from state j to the end
        suffix_max = np.maximum.accumulate(precision[::-1])[::-1]
        for j in range(m - 1, 0, -1):
            delta = float(recall[j] - recall[j - 1])
            ap += delta * max(float(precision[j - 1]), float(suffix_max[j]))
        ap += float(recall[0]) * max(0.0, float(suffix_max[0]))
        return ap
    total = 0.0
    for point in range(points):
        cur_recall = point * 1.0 / (points - 1) if points > 1 else 0.0
        sel = precision[recall >= cur_recall]
        best = float(sel.max()) if sel.size else 0.0
        total += max(best, 0.0)
    return total / points


def validate_detector_map(net, data, thresh: float = 0.25, iou_thresh: float = 0.5, points: int = 0,
                          letter_box: bool = False, out=None, *, cfg_path: str | None = None,
                          batch: int | None = None, err=None) -> float:
    """Upstream validate_detector_map on an in-memory Network; prints its report to `out`
    (default stdout; progress and timing go to `err`, default stderr) and returns mAP.

    data: the data file's path or its Section (keys valid (default: train, then
    data/train.txt), names, difficult). letter_box: letterbox the images (also when the
    cfg's [net] has letter_box=1). Raises EvalError / ImageError / CfgError for bad input.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    if points < 0 or points == 1:
        raise EvalError(f"-points {points}: use 0 (area under the curve), 11 (VOC 2007) or 101 (COCO)")
    d = load_data(data)
    train_images = data_str(d, "train", "data/train.txt")
    valid_images = data_str(d, "valid", train_images)
    difficult_images = data_str(d, "difficult", None)
    names, names_path = read_names_file(d)
    cfg_path = cfg_path or net.path
    classes_last = network_classes(net)
    if classes_last != len(names):
        print(f"\n Error: in the file {names_path} number of names {len(names)} that isn't equal to "
              f"classes={classes_last} in the file {cfg_path} ", file=out)
        check_names(names, names_path, classes_last, cfg_path)

    print("\n calculation mAP (mean average precision)...", file=out)
    paths = read_valid_list(valid_images, "valid")
    paths_dif = read_valid_list(difficult_images, "difficult") if difficult_images else None
    if paths_dif is not None and len(paths_dif) < len(paths):
        raise EvalError(f"{difficult_images}: the difficult list has {len(paths_dif)} images but the valid list "
                        f"{valid_images} has {len(paths)}: they must correspond line by line")
    det_layer = announce_detection_layers(net, out)
    out.flush()
    classes = int(det_layer.classes)
    letter = bool(letter_box or net.options.letter_box)
    netw, neth = net.options.width, net.options.height
    kind = getattr(det_layer, "nms_kind", "default")
    beta = getattr(det_layer, "beta_nms", 0.6)

    col = _Collector(classes, thresh, iou_thresh)
    start = time.time()
    batch = batch or default_batch(net)
    with eval_mode(net):
        done = 0
        for group in batched(iter_network_inputs(paths, netw, neth, letter), batch):
            raws = predict_many(net, [g.sized for g in group])
            for g, raw in zip(group, raws):
                if letter:
                    dets, _, _, ncls = network_boxes(net, raw, MAP_DET_THRESH, 0.0, g.width, g.height, True,
                                                     relative=True)
                else:
                    dets, _, _, ncls = network_boxes(net, raw, MAP_DET_THRESH, 0.0, 1, 1, False, relative=False)
                dets = nms_in_upstream_order(dets, classes, MAP_NMS, kind, beta)
                truth = read_truth(g.path, classes, out=out)
                truth_dif = read_truth(paths_dif[g.index], classes, out=out) if paths_dif else empty_truth()
                col.add_image(dets, truth, truth_dif)
                done += 1
                if done % 4 == 0 or done == len(paths):
                    print(f"\r{done}", end="", file=err, flush=True)
    return _report(col, names, classes, thresh, iou_thresh, points, out, err, start)


def _report(col: _Collector, names, classes, thresh, iou_thresh, points, out, err, start) -> float:
    tp_thr, fp_thr = col.tp_for_thresh, col.fp_for_thresh
    avg_iou = col.avg_iou
    if tp_thr + fp_thr > 0:
        avg_iou = F32(avg_iou / F32(tp_thr + fp_thr))

    p = np.concatenate(col.probs) if col.probs else np.zeros(0, F32)
    c = np.concatenate(col.cls) if col.cls else np.zeros(0, np.int64)
    t = np.concatenate(col.truth_index) if col.truth_index else np.zeros(0, np.int64)
    count = int(p.size)
    order = np.argsort(-p, kind="stable")  # upstream's qsort (glibc: a stable merge sort)
    p, c, t = p[order], c[order], t[order]
    print(f"\n detections_count = {count}, unique_truth_count = {col.unique_truth_count}  ", file=out)

    # first detection (in rank order) of each truth box is the TP
    is_tp = np.zeros(count, bool)
    matched = t >= 0
    if matched.any():
        idx = np.flatnonzero(matched)
        _, first = np.unique(t[idx], return_index=True)
        is_tp[idx[first]] = True
    for rank in range(0, count, 100):
        print(f" rank = {rank} of ranks = {count} \r", end="", file=out)

    mean_ap = 0.0
    for i in range(classes):
        sel = np.flatnonzero(c == i)
        tp = np.cumsum(is_tp[sel]).astype(np.int64)
        fp = np.cumsum(~is_tp[sel]).astype(np.int64)
        truth_n = int(col.truth_classes_count[i])
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
            recall = np.where(truth_n > 0, tp / max(truth_n, 1), 0.0)
        ap = _average_precision(recall.astype(np.float64), precision.astype(np.float64), points)
        print(f"class_id = {i}, name = {names[i]}, ap = {ap * 100:2.2f}%   \t "
              f"(TP = {col.tp_per_class[i]}, FP = {col.fp_per_class[i]}) ", file=out)
        mean_ap += ap

    with np.errstate(invalid="ignore", divide="ignore"):
        cur_precision = F32(tp_thr) / (F32(tp_thr) + F32(fp_thr))
        cur_recall = F32(tp_thr) / (F32(tp_thr) + F32(col.unique_truth_count - tp_thr))
        f1 = F32(2) * cur_precision * cur_recall / (cur_precision + cur_recall)
    th = float(F32(thresh))
    print(f"\n for conf_thresh = {th:1.2f}, precision = {c_nan_str(float(cur_precision), '%1.2f')}, "
          f"recall = {c_nan_str(float(cur_recall), '%1.2f')}, F1-score = {c_nan_str(float(f1), '%1.2f')} ", file=out)
    print(f" for conf_thresh = {th:0.2f}, TP = {tp_thr}, FP = {fp_thr}, "
          f"FN = {col.unique_truth_count - tp_thr}, average IoU = {float(avg_iou * F32(100)):2.2f} % ", file=out)

    mean_ap = mean_ap / classes
    iou_f = F32(iou_thresh)
    print(f"\n IoU threshold = {float(iou_f * F32(100)):2.0f} %, ", end="", file=out)
    if points:
        print(f"used {points} Recall-points ", file=out)
    else:
        print("used Area-Under-Curve for each unique Recall ", file=out)
    print(f" mean average precision (mAP@{float(iou_f):0.2f}) = {mean_ap:f}, or {mean_ap * 100:2.2f} % ", file=out)
    out.flush()
    print(f"\nTotal Detection Time: {int(time.time() - start)} Seconds", file=err, flush=True)
    print("\nSet -points flag:", file=out)
    print(" `-points 101` for MS COCO ", file=out)
    print(" `-points 11` for PascalVOC 2007 (uncomment `difficult` in voc.data) ", file=out)
    print(" `-points 0` (AUC) for ImageNet, PascalVOC 2010-2012, your custom dataset", file=out)
    out.flush()
    return float(mean_ap)


def map_from_files(datacfg: str, cfgfile: str, weightfile: str | None, thresh: float = 0.25,
                   iou_thresh: float = 0.5, points: int = 0, letter_box: bool = False, out=None,
                   device=None) -> float:
    """`detector map DATA CFG WEIGHTS`: load the network, then validate_detector_map."""
    from .common import load_eval_network

    net = load_eval_network(cfgfile, weightfile, device)
    return validate_detector_map(net, datacfg, thresh, iou_thresh, points, letter_box, out, cfg_path=cfgfile)
