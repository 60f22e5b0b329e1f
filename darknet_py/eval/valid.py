"""Upstream: validate_detector (src/detector.c): `detector valid`, results for an
external scorer.

Every image of the data file's `valid` list goes through the network (stretched, or
letterboxed when the cfg's [net] has letter_box=1), get_network_boxes with thresh 0.001
and hier_thresh 0.5 in pixels, then the cfg's NMS at 0.6; every (box, class) with a
non-zero probability is written, boxes in upstream's array order. The data file's
`eval` picks the format and `results` the folder (default "results"); `-out NAME`
replaces the default file name:

* voc (default): RESULTS/comp4_det_test_CLASSNAME.txt per class,
  `IMAGE_ID PROB XMIN YMIN XMAX YMAX` (1-based pixels clamped to [1, w] x [1, h]);
* coco: RESULTS/coco_results.json (see eval/coco.py); with `coco_annotations=FILE`
  in the data file the results are also scored with pycocotools;
* imagenet: RESULTS/imagenet-detection.txt, `IMAGE_NUMBER CLASS+1 PROB XMIN YMIN XMAX YMAX`;
* bdd: RESULTS/bdd_results.json; kitti: RESULTS/kitti_results/data/IMAGE_ID.txt.

Every file is written whole at the end, atomically.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from ..outputs.detections import network_boxes
from ..outputs.fileio import atomic_write_text
from .coco import CocoTarget, coco_json_text, coco_lines, evaluate_coco
from .common import (F32, EvalError, announce_detection_layers, basecfg, batched, check_names, data_str,
                     default_batch, eval_mode, iter_network_inputs, load_data, load_eval_network,
                     nms_in_upstream_order, predict_many, read_names_file, read_valid_list)

VALID_THRESH = 0.001
VALID_NMS = 0.6
VALID_HIER = 0.5
BDD_IDS = ("bike", "bus", "car", "motor", "person", "rider", "traffic light", "traffic sign", "train", "truck")
KITTI_IDS = ("car", "pedestrian", "cyclist")


def _corners(dets, w: int, h: int, one_based: bool):
    """xmin, ymin, xmax, ymax as upstream computes them: double arithmetic on the float
    box, stored as float, clamped to the image ([1, w] with one_based, else [0, w])."""
    b = dets.boxes.astype(np.float64)
    add = 1.0 if one_based else 0.0
    xmin = (b[:, 0] - b[:, 2] / 2.0 + add).astype(F32)
    xmax = (b[:, 0] + b[:, 2] / 2.0 + add).astype(F32)
    ymin = (b[:, 1] - b[:, 3] / 2.0 + add).astype(F32)
    ymax = (b[:, 1] + b[:, 3] / 2.0 + add).astype(F32)
    low = F32(add)
    xmin = np.where(xmin < low, low, xmin)
    ymin = np.where(ymin < low, low, ymin)
    xmax = np.where(xmax > w, F32(w), xmax)
    ymax = np.where(ymax > h, F32(h), ymax)
    return xmin, ymin, xmax, ymax


def voc_lines(image_id: str, dets, classes: int, w: int, h: int) -> list[tuple[int, str]]:
    """Upstream print_detector_detections: (class, line) per (box, class) with prob != 0."""
    xmin, ymin, xmax, ymax = _corners(dets, w, h, True)
    out = []
    for i, j in zip(*np.nonzero(dets.probs[:, :classes] != 0)):
        out.append((int(j), f"{image_id} {float(dets.probs[i, j]):f} {float(xmin[i]):f} {float(ymin[i]):f} "
                            f"{float(xmax[i]):f} {float(ymax[i]):f}\n"))
    return out


def imagenet_lines(number: int, dets, classes: int, w: int, h: int) -> list[str]:
    """Upstream print_imagenet_detections."""
    xmin, ymin, xmax, ymax = _corners(dets, w, h, False)
    return [f"{number} {j + 1} {float(dets.probs[i, j]):f} {float(xmin[i]):f} {float(ymin[i]):f} "
            f"{float(xmax[i]):f} {float(ymax[i]):f}\n"
            for i, j in zip(*np.nonzero(dets.probs[:, :classes] > 0))]


def bdd_lines(path: str, dets, classes: int, w: int, h: int) -> list[str]:
    """Upstream print_bdd_detections (the name: the file name with ".jpg" removed)."""
    name = os.path.basename(path).replace(".jpg", "")
    xmin, ymin, xmax, ymax = _corners(dets, w, h, False)
    return [f'\t{{\n\t\t"name":"{name}",\n\t\t"category":"{BDD_IDS[j]}",\n\t\t"bbox":[{float(xmin[i]):f}, '
            f'{float(ymin[i]):f}, {float(xmax[i]):f}, {float(ymax[i]):f}],\n\t\t"score":{float(dets.probs[i, j]):f}\n\t}}'
            for i, j in zip(*np.nonzero(dets.probs[:, :classes] != 0))]


def kitti_text(dets, classes: int, w: int, h: int) -> str:
    """Upstream print_kitti_detections: one file per image."""
    xmin, ymin, xmax, ymax = _corners(dets, w, h, False)
    return "".join(f"{KITTI_IDS[j]} -1 -1 -10 {float(xmin[i]):f} {float(ymin[i]):f} {float(xmax[i]):f} "
                   f"{float(ymax[i]):f} -1 -1 -1 -1000 -1000 -1000 -10 {float(dets.probs[i, j]):f}\n"
                   for i, j in zip(*np.nonzero(dets.probs[:, :classes] != 0)))


def validate_detector(datacfg, cfgfile: str, weightfile: str | None, outfile: str | None = None,
                      out=None, err=None, net=None, batch: int | None = None, device=None) -> dict:
    """`detector valid DATA CFG WEIGHTS [-out NAME]`. Returns {"files": [written paths],
    "coco_stats": [12 floats] when a COCO annotation file was scored}."""
    out = out or sys.stdout
    err = err or sys.stderr
    d = load_data(datacfg)
    valid_images = data_str(d, "valid", "data/train.list")
    names, names_path = read_names_file(d)
    prefix = data_str(d, "results", "results", announce=True)
    if d.has("map"):
        raise EvalError(f"{d.path}: 'map=' (a class index remapping file) is not supported by detector valid")
    if net is None:
        net = load_eval_network(cfgfile, weightfile, device)
    o = net.options
    print(f"Learning Rate: {float(F32(o.learning_rate)):g}, Momentum: {float(F32(o.momentum)):g}, "
          f"Decay: {float(F32(o.decay)):g}", file=err)
    paths = read_valid_list(valid_images, "valid")
    det_layer = announce_detection_layers(net, out)
    out.flush()
    classes = int(getattr(det_layer, "classes", 0) or 0)
    kind_ = getattr(det_layer, "nms_kind", "default")
    beta = getattr(det_layer, "beta_nms", 0.6)
    check_names(names, names_path, classes, cfgfile, exact=False)

    kind = data_str(d, "eval", "voc", announce=True)
    print_classes = classes
    if kind == "coco":
        outfile = outfile or "coco_results"
    elif kind == "bdd":
        outfile = outfile or "bdd_results"
        if classes > len(BDD_IDS):
            raise EvalError(f"eval=bdd: {classes} classes but upstream's BDD table has {len(BDD_IDS)} names")
    elif kind == "kitti":
        outfile = outfile or "kitti_results"
        print(outfile, file=out)
        if classes > len(KITTI_IDS):
            raise EvalError(f"eval=kitti: {classes} classes but upstream's KITTI table has {len(KITTI_IDS)} names")
    elif kind == "imagenet":
        outfile = outfile or "imagenet-detection"
        print_classes = min(classes, 200)
    else:
        kind = "voc"
        outfile = outfile or "comp4_det_test_"
    annotations = data_str(d, "coco_annotations", None) if kind == "coco" else None
    coco_target = CocoTarget(names, classes, annotations) if kind == "coco" else None
    os.makedirs(prefix, exist_ok=True)
    if kind == "kitti":
        os.makedirs(os.path.join(prefix, outfile, "data"), exist_ok=True)

    voc: list[list[str]] = [[] for _ in range(classes)]
    lines: list[str] = []
    kitti: dict[str, str] = {}
    image_ids: list[int] = []
    letter = bool(o.letter_box)
    start = time.time()
    batch = batch or default_batch(net)
    with eval_mode(net):
        done = 0
        for group in batched(iter_network_inputs(paths, o.width, o.height, letter), batch):
            raws = predict_many(net, [g.sized for g in group])
            for g, raw in zip(group, raws):
                w, h = g.width, g.height
                dets, _, _, _ = network_boxes(net, raw, VALID_THRESH, VALID_HIER, w, h, letter, relative=False)
                dets = nms_in_upstream_order(dets, classes, VALID_NMS, kind_, beta)
                if kind == "coco":
                    lines += coco_lines(coco_target, g.path, dets, classes, w, h)
                    image_ids.append(coco_target.image_id(g.path))
                elif kind == "imagenet":
                    lines += imagenet_lines(g.index + 1, dets, print_classes, w, h)
                elif kind == "bdd":
                    lines += bdd_lines(g.path, dets, classes, w, h)
                elif kind == "kitti":
                    kitti[basecfg(g.path)] = kitti_text(dets, classes, w, h)
                else:
                    for j, line in voc_lines(basecfg(g.path), dets, classes, w, h):
                        voc[j].append(line)
                done += 1
                if done % 4 == 0 or done == len(paths):
                    print(done, file=err, flush=True)

    written = []
    if kind == "voc":
        for j in range(classes):
            path = os.path.join(prefix, f"{outfile}{names[j]}.txt")
            atomic_write_text(path, "".join(voc[j]))
            written.append(path)
    elif kind in ("coco", "bdd"):
        path = os.path.join(prefix, f"{outfile}.json")
        if kind == "coco":
            atomic_write_text(path, coco_json_text(lines))
        else:
            atomic_write_text(path, "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[\n]\n")
        written.append(path)
    elif kind == "imagenet":
        path = os.path.join(prefix, f"{outfile}.txt")
        atomic_write_text(path, "".join(lines))
        written.append(path)
    else:
        for image_id, text in kitti.items():
            path = os.path.join(prefix, outfile, "data", f"{image_id}.txt")
            atomic_write_text(path, text)
            written.append(path)
    print(f"Total Detection Time: {float(int(time.time() - start)):f} Seconds", file=err, flush=True)
    result = {"files": written}
    if annotations:
        result["coco_stats"] = evaluate_coco(annotations, written[0], image_ids, out)
    return result
