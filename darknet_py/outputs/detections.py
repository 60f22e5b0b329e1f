"""Upstream: get_network_boxes and NMS (src/network.c, src/yolo_layer.c, src/region_layer.c, src/box.c)

From a detection layer's output buffer to upstream's ``detection`` list, and upstream's
non-maximum suppression on it.

Every decoder takes the layer's flat float32 output exactly as upstream's forward pass
leaves ``l.output`` (activations already applied in place) plus the layer parameters as
keyword arguments, and returns a `Detections` with the boxes in the same order upstream
fills its ``dets`` array.  Arithmetic is done in float32 where upstream uses ``float`` and
in float64 then rounded where upstream goes through ``double`` (``exp``, ``pow``, the
``2.`` of the box correction), so that the ``prob > thresh`` decisions agree bit for bit.

Layouts of ``l.output`` (batch 1):

* ``[yolo]``: anchor-major, then channel (x, y, w, h, objectness, classes...), then row,
  then column; logistic (and ``scale_x_y``) already applied to x, y, objectness and
  classes (not to w, h; with ``new_coords=1`` nothing is activated here).
* ``[Gaussian_yolo]``: anchor-major with ``9 + classes`` channels: mu_x, sigma_x, mu_y,
  sigma_y, mu_w, sigma_w, mu_h, sigma_h, objectness, classes...; everything but mu_w and
  mu_h went through the logistic.
* ``[region]``: upstream's CPU forward *flattens* the input, so the output is
  location-major: for each cell (row-major) for each anchor ``coords + 1 + classes``
  consecutive values (x, y, w, h raw; objectness logistic; classes softmaxed).
* ``[detection]``: ``side*side*classes`` class probabilities, then ``side*side*n``
  confidences, then ``side*side*n*4`` boxes.

NMS (`nms`, `nms_obj`) returns a new `Detections` with the suppressed probabilities set to
0, in the input order.  Upstream keeps every box in its array too (and permutes it by its
sorts); what it prints or draws is just the boxes that still have a class with
``prob > thresh``: use `Detections.to_dicts(thresh)` or `Detections.kept(thresh)` for that.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..box import box_diou, box_diounms, box_iou

__all__ = [
    "Detections",
    "NMS_KINDS",
    "yolo_detections",
    "gaussian_yolo_detections",
    "region_detections",
    "detection_detections",
    "correct_yolo_boxes",
    "correct_region_boxes",
    "nms",
    "nms_obj",
    "do_nms_sort",
    "diounms_sort",
]

_F32 = np.float32

# upstream's NMS_KIND enum, in order: DEFAULT_NMS=0, GREEDY_NMS=1, DIOU_NMS=2, CORNERS_NMS=3
NMS_KINDS = ("default", "greedynms", "diounms", "cornersnms")


# =========================================================================== Detections
@dataclass
class Detections:
    """Upstream's ``detection`` array as numpy columns.

    boxes: (N, 4) float32 x, y, w, h (centre, relative to the image unless the decoder
        was asked for ``relative=False``).
    objectness: (N,) float32.
    probs: (N, C) float32, upstream's ``det.prob``: objectness * class probability where
        that exceeds the threshold, else 0 (NMS zeroes more of them).
    uc: (N, 4) float32 sigma_x, sigma_y, sigma_w, sigma_h of a Gaussian_yolo layer, or None.
    """

    boxes: np.ndarray
    objectness: np.ndarray
    probs: np.ndarray
    uc: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=_F32).reshape(-1, 4)
        n = self.boxes.shape[0]
        self.objectness = np.asarray(self.objectness, dtype=_F32).reshape(n)
        probs = np.asarray(self.probs, dtype=_F32)
        self.probs = probs.reshape(n, -1) if probs.ndim != 2 else probs
        if self.probs.shape[0] != n:
            raise ValueError(f"probs has {self.probs.shape[0]} rows for {n} boxes")
        if self.uc is not None:
            self.uc = np.asarray(self.uc, dtype=_F32).reshape(n, 4)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def classes(self) -> int:
        return int(self.probs.shape[1])

    @classmethod
    def empty(cls, classes: int, with_uc: bool = False) -> "Detections":
        return cls(np.zeros((0, 4), _F32), np.zeros(0, _F32), np.zeros((0, classes), _F32),
                   np.zeros((0, 4), _F32) if with_uc else None)

    @classmethod
    def concat(cls, parts: Iterable["Detections"], classes: int | None = None) -> "Detections":
        """Concatenate in order (upstream's fill_network_boxes walks the layers in order).

        ``uc`` is kept only if every part has one.  ``classes`` is needed for an empty list.
        """
        parts = list(parts)
        if not parts:
            if classes is None:
                raise ValueError("concat of no Detections needs classes=")
            return cls.empty(classes)
        ncls = {p.classes for p in parts}
        if len(ncls) != 1:
            raise ValueError(f"Detections with different numbers of classes: {sorted(ncls)}")
        uc = None
        if all(p.uc is not None for p in parts):
            uc = np.concatenate([p.uc for p in parts])
        return cls(np.concatenate([p.boxes for p in parts]),
                   np.concatenate([p.objectness for p in parts]),
                   np.concatenate([p.probs for p in parts]), uc)

    def select(self, index) -> "Detections":
        """Rows by integer index array or boolean mask."""
        return Detections(self.boxes[index], self.objectness[index], self.probs[index],
                          None if self.uc is None else self.uc[index])

    def copy(self) -> "Detections":
        return Detections(self.boxes.copy(), self.objectness.copy(), self.probs.copy(),
                          None if self.uc is None else self.uc.copy())

    def kept(self, thresh: float) -> "Detections":
        """The boxes upstream would print: those with some prob > thresh."""
        return self.select(np.any(self.probs > _F32(thresh), axis=1))

    def to_dicts(self, thresh: float, keep_empty: bool = False) -> list[dict]:
        """One dict per box: x, y, w, h, objectness (floats) and probs {class: prob} for
        every prob > thresh (what upstream prints).  Boxes without such a class are left
        out unless keep_empty."""
        t = _F32(thresh)
        out = []
        for i in range(len(self)):
            row = self.probs[i]
            cls_idx = np.flatnonzero(row > t)
            if not keep_empty and cls_idx.size == 0:
                continue
            x, y, w, h = (float(v) for v in self.boxes[i])
            d = {"x": x, "y": y, "w": w, "h": h, "objectness": float(self.objectness[i]),
                 "probs": {int(k): float(row[k]) for k in cls_idx}}
            if self.uc is not None:
                d["uc"] = [float(v) for v in self.uc[i]]
            out.append(d)
        return out


# =========================================================================== helpers
def _flat(output, expected: int, what: str) -> np.ndarray:
    a = np.asarray(output, dtype=_F32).reshape(-1)
    if a.size != expected:
        raise ValueError(f"{what}: output has {a.size} values, expected {expected}")
    return a


def _anchor_biases(anchors, mask, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n,) float32 anchor widths and heights of this layer's anchors (l.biases[2*mask[k]])."""
    biases = np.asarray(anchors, dtype=_F32).reshape(-1)
    idx = np.arange(n) if mask is None else np.asarray(mask, dtype=np.int64).reshape(-1)
    if idx.size != n:
        raise ValueError(f"mask has {idx.size} entries for n={n} anchors")
    if biases.size < 2 * (int(idx.max()) + 1 if idx.size else 0):
        raise ValueError(f"anchors has {biases.size // 2} pairs, mask needs {int(idx.max()) + 1}")
    return biases[2 * idx], biases[2 * idx + 1]


def _letter_dims(imw: int, imh: int, netw: int, neth: int) -> tuple[int, int]:
    """new_w, new_h of upstream's letterbox branch (float ratio test, int division)."""
    if _F32(netw) / _F32(imw) < _F32(neth) / _F32(imh):
        return netw, (imh * netw) // imw
    return (imw * neth) // imh, neth


def _relative_to_pixels(boxes: np.ndarray, imw: int, imh: int) -> np.ndarray:
    boxes = boxes.copy()
    boxes[:, 0] *= _F32(imw)
    boxes[:, 2] *= _F32(imw)
    boxes[:, 1] *= _F32(imh)
    boxes[:, 3] *= _F32(imh)
    return boxes


def correct_yolo_boxes(boxes, *, imw: int, imh: int, netw: int, neth: int,
                       relative: bool = True, letter: bool = False) -> np.ndarray:
    """upstream correct_yolo_boxes: network-relative boxes -> image-relative (or pixels).

    Without letterboxing the network saw the whole image stretched, so the boxes are
    unchanged (then scaled to pixels if not relative)."""
    boxes = np.asarray(boxes, dtype=_F32).reshape(-1, 4).copy()
    if letter:
        new_w, new_h = _letter_dims(imw, imh, netw, neth)
    else:
        new_w, new_h = netw, neth
    deltaw, deltah = _F32(netw - new_w), _F32(neth - new_h)
    ratiow, ratioh = _F32(new_w) / _F32(netw), _F32(new_h) / _F32(neth)
    b = boxes.astype(np.float64)
    boxes[:, 0] = ((b[:, 0] - np.float64(deltaw) / 2.0 / netw) / np.float64(ratiow)).astype(_F32)
    boxes[:, 1] = ((b[:, 1] - np.float64(deltah) / 2.0 / neth) / np.float64(ratioh)).astype(_F32)
    boxes[:, 2] *= _F32(1) / ratiow
    boxes[:, 3] *= _F32(1) / ratioh
    return boxes if relative else _relative_to_pixels(boxes, imw, imh)


def correct_region_boxes(boxes, *, imw: int, imh: int, netw: int, neth: int,
                         relative: bool = True, letter: bool = True) -> np.ndarray:
    """upstream correct_region_boxes (always letterboxed) and correct_gaussian_yolo_boxes
    (letterboxed only with ``letter``): the same maths as correct_yolo_boxes but the
    width/height factor is netw/new_w instead of 1/(new_w/netw)."""
    boxes = np.asarray(boxes, dtype=_F32).reshape(-1, 4).copy()
    if letter:
        new_w, new_h = _letter_dims(imw, imh, netw, neth)
    else:
        new_w, new_h = netw, neth
    b = boxes.astype(np.float64)
    boxes[:, 0] = ((b[:, 0] - (netw - new_w) / 2.0 / netw)
                   / np.float64(_F32(new_w) / _F32(netw))).astype(_F32)
    boxes[:, 1] = ((b[:, 1] - (neth - new_h) / 2.0 / neth)
                   / np.float64(_F32(new_h) / _F32(neth))).astype(_F32)
    boxes[:, 2] *= _F32(netw) / _F32(new_w)
    boxes[:, 3] *= _F32(neth) / _F32(new_h)
    return boxes if relative else _relative_to_pixels(boxes, imw, imh)


def _thresholded(prob: np.ndarray, thresh: float) -> np.ndarray:
    return np.where(prob > _F32(thresh), prob, _F32(0)).astype(_F32)


def _exp_scaled(t: np.ndarray, bias: np.ndarray, div: float) -> np.ndarray:
    """float(exp((double)t) * bias / div), as upstream's get_*_box."""
    with np.errstate(over="ignore"):
        return (np.exp(t.astype(np.float64)) * bias.astype(np.float64) / div).astype(_F32)


def _logistic(x: np.ndarray) -> np.ndarray:
    """upstream logistic_activate: 1./(1. + exp(-x)) in double, returned as float."""
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(_F32)


def _cells_above(output, kind: str, ch: int, obj_channel: int, *, w: int, h: int, n: int, anchors, mask,
                 thresh: float):
    """The anchors' predictions (rows of ch values) whose objectness (channel obj_channel) is
    above thresh, in upstream's order (cell-major, then anchor): (pred, obj, col, row, anchor
    w, anchor h), the last four per kept row."""
    out = _flat(output, n * ch * h * w, kind).reshape(n, ch, h, w)
    pred = out.transpose(2, 3, 0, 1).reshape(h * w * n, ch)
    cell = np.repeat(np.arange(h * w), n)
    anc = np.tile(np.arange(n), h * w)
    obj = pred[:, obj_channel]
    keep = obj > _F32(thresh)
    pred, cell, anc, obj = pred[keep], cell[keep], anc[keep], obj[keep]
    aw, ah = _anchor_biases(anchors, mask, n)
    return pred, obj, (cell % w).astype(_F32), (cell // w).astype(_F32), aw[anc], ah[anc]


# =========================================================================== [yolo]
def yolo_detections(output, *, w: int, h: int, n: int, classes: int, anchors, mask,
                    netw: int, neth: int, imw: int, imh: int, thresh: float,
                    relative: bool = True, letter: bool = False,
                    new_coords: bool = False) -> Detections:
    """upstream get_yolo_detections + correct_yolo_boxes.

    n: anchors of this layer (= len(mask)); anchors: the cfg's whole ``anchors`` list
    (pixels, pairs); mask: which pairs this layer uses (None: the first n).  Only cells
    with objectness > thresh become detections, in upstream's order (cell-major, then
    anchor).  Box: x = (col + tx)/w, y = (row + ty)/h, w = exp(tw)*anchor_w/netw
    (new_coords: tw*tw*4*anchor_w/netw), likewise h.
    """
    pred, obj, col, row, aw, ah = _cells_above(output, "yolo", 4 + 1 + classes, 4, w=w, h=h, n=n,
                                               anchors=anchors, mask=mask, thresh=thresh)
    boxes = np.empty((pred.shape[0], 4), _F32)
    boxes[:, 0] = (col + pred[:, 0]) / _F32(w)
    boxes[:, 1] = (row + pred[:, 1]) / _F32(h)
    if new_coords:
        boxes[:, 2] = pred[:, 2] * pred[:, 2] * _F32(4) * aw / _F32(netw)
        boxes[:, 3] = pred[:, 3] * pred[:, 3] * _F32(4) * ah / _F32(neth)
    else:
        boxes[:, 2] = _exp_scaled(pred[:, 2], aw, netw)
        boxes[:, 3] = _exp_scaled(pred[:, 3], ah, neth)
    probs = _thresholded(obj[:, None] * pred[:, 5:], thresh)
    boxes = correct_yolo_boxes(boxes, imw=imw, imh=imh, netw=netw, neth=neth,
                               relative=relative, letter=letter)
    return Detections(boxes, obj.copy(), probs)


# =========================================================================== [Gaussian_yolo]
_YOLO_POINTS = ("center", "left_top", "right_bottom")


def gaussian_yolo_detections(output, *, w: int, h: int, n: int, classes: int, anchors, mask,
                             netw: int, neth: int, imw: int, imh: int, thresh: float,
                             relative: bool = True, letter: bool = False,
                             yolo_point: str = "center") -> Detections:
    """upstream get_gaussian_yolo_detections + correct_gaussian_yolo_boxes.

    The output has 9 + classes channels per anchor (see the module docstring).  Cells with
    objectness > thresh become detections; ``uc`` holds sigma_x, sigma_y, sigma_w, sigma_h
    and every class probability is objectness * class * (1 - mean(uc)), thresholded.
    yolo_point: 'center' (default), 'left_top' or 'right_bottom' as the cfg's yolo_point.
    """
    if yolo_point not in _YOLO_POINTS:
        raise ValueError(f"yolo_point must be one of {_YOLO_POINTS}, got {yolo_point!r}")
    pred, obj, col, row, aw, ah = _cells_above(output, "Gaussian_yolo", 8 + 1 + classes, 8, w=w, h=h, n=n,
                                               anchors=anchors, mask=mask, thresh=thresh)
    boxes = np.empty((pred.shape[0], 4), _F32)
    boxes[:, 2] = _exp_scaled(pred[:, 4], aw, netw)
    boxes[:, 3] = _exp_scaled(pred[:, 6], ah, neth)
    boxes[:, 0] = (col + pred[:, 0]) / _F32(w)
    boxes[:, 1] = (row + pred[:, 2]) / _F32(h)
    if yolo_point == "left_top":
        boxes[:, 0] += boxes[:, 2] / _F32(2)
        boxes[:, 1] += boxes[:, 3] / _F32(2)
    elif yolo_point == "right_bottom":
        boxes[:, 0] -= boxes[:, 2] / _F32(2)
        boxes[:, 1] -= boxes[:, 3] / _F32(2)
    uc = pred[:, [1, 3, 5, 7]].copy()
    uc_sum = ((uc[:, 0] + uc[:, 1]) + uc[:, 2]) + uc[:, 3]
    uc_aver = (uc_sum.astype(np.float64) / 4.0).astype(_F32)
    prob = ((obj[:, None] * pred[:, 9:]).astype(np.float64)
            * (1.0 - uc_aver.astype(np.float64))[:, None]).astype(_F32)
    probs = _thresholded(prob, thresh)
    boxes = correct_region_boxes(boxes, imw=imw, imh=imh, netw=netw, neth=neth,
                                 relative=relative, letter=letter)
    return Detections(boxes, obj.copy(), probs, uc)


# =========================================================================== [region]
def region_detections(output, *, w: int, h: int, n: int, classes: int, coords: int = 4,
                      anchors, netw: int, neth: int, imw: int, imh: int, thresh: float,
                      relative: bool = True, letter: bool = False, background: int = 0,
                      softmax_tree=None, path: str = "network") -> Detections:
    """A [region] layer's detections; anchors are in grid cells (the cfg's values).

    path='network' (default) is what upstream's get_network_boxes really runs for a region
    layer (custom_get_region_detections in network.c): get_region_boxes on the flattened
    output (location-major, see the module docstring), all w*h*n boxes kept in cell-major,
    anchor-minor order, objectness fixed to 1, prob = objectness_out * class > thresh, then
    correct_yolo_boxes(relative, letter).  ``background`` plays no part there, and
    coords must be 4 (upstream's get_region_boxes assumes classes + 5 values per anchor).

    path='get_region_detections' is region_layer.c's get_region_detections +
    correct_region_boxes (not called by get_network_boxes): reads the anchor-major
    layout of entry_index, detections in anchor-major order, objectness = scale if
    scale > thresh else 0 (scale = 1 with ``background``), probabilities only for boxes
    with objectness, always letterbox-corrected (``letter`` is ignored there).

    Box (both paths): x = (col + logistic(tx))/w, y = (row + logistic(ty))/h,
    w = exp(tw)*anchor_w/w, h = exp(th)*anchor_h/h.
    softmax_tree (yolo9000's hierarchy) is not supported: NotImplementedError.
    """
    if softmax_tree is not None:
        raise NotImplementedError("region layers with a softmax tree are not supported")
    size = coords + classes + 1
    aw, ah = _anchor_biases(anchors, None, n)
    out = _flat(output, h * w * n * size, "region")
    if path == "network":
        if coords != 4:
            raise NotImplementedError("upstream's get_region_boxes assumes coords=4")
        pred = out.reshape(h * w * n, size)
        cell = np.repeat(np.arange(h * w), n)
        anc = np.tile(np.arange(n), h * w)
        scale = pred[:, 4]
        cls_p = pred[:, 5:]
        objectness = np.ones(h * w * n, _F32)
    elif path == "get_region_detections":
        pred = out.reshape(n, size, h * w).transpose(0, 2, 1).reshape(n * h * w, size)
        anc = np.repeat(np.arange(n), h * w)
        cell = np.tile(np.arange(h * w), n)
        scale = np.ones(n * h * w, _F32) if background else pred[:, coords]
        cls_p = pred[:, coords + 1:coords + 1 + classes]
        objectness = np.where(scale > _F32(thresh), scale, _F32(0)).astype(_F32)
    else:
        raise ValueError(f"path must be 'network' or 'get_region_detections', got {path!r}")
    col = (cell % w).astype(_F32)
    row = (cell // w).astype(_F32)
    boxes = np.empty((pred.shape[0], 4), _F32)
    boxes[:, 0] = (col + _logistic(pred[:, 0])) / _F32(w)
    boxes[:, 1] = (row + _logistic(pred[:, 1])) / _F32(h)
    boxes[:, 2] = _exp_scaled(pred[:, 2], aw[anc], w)
    boxes[:, 3] = _exp_scaled(pred[:, 3], ah[anc], h)
    probs = _thresholded(scale[:, None] * cls_p, thresh)
    if path == "network":
        boxes = correct_yolo_boxes(boxes, imw=imw, imh=imh, netw=netw, neth=neth,
                                   relative=relative, letter=letter)
    else:
        probs[objectness == 0] = 0
        boxes = correct_region_boxes(boxes, imw=imw, imh=imh, netw=netw, neth=neth,
                                     relative=relative, letter=True)
    return Detections(boxes, objectness, probs)


# =========================================================================== [detection]
def detection_detections(output, *, side: int, n: int, classes: int, sqrt: bool,
                         imw: int, imh: int, thresh: float,
                         relative: bool = True) -> Detections:
    """upstream get_detection_detections (YOLOv1's [detection] layer).

    All side*side*n boxes, cell-major then box.  x = (bx + col)/side*imw,
    y = (by + row)/side*imh, w = bw**(2 if sqrt else 1)*imw, likewise h: upstream always
    scales by the image size here (it gets no ``relative`` argument), and so does this
    function: ``relative`` is accepted only for a uniform signature and ignored.
    objectness = the box's confidence (not thresholded), prob = confidence * class
    probability of the cell, thresholded.
    """
    del relative  # upstream's get_detection_detections has no such argument
    ss = side * side
    out = _flat(output, ss * (classes + n * 5), "detection")
    cls_p = out[:ss * classes].reshape(ss, classes)
    scale = out[ss * classes:ss * (classes + n)].reshape(ss * n)
    braw = out[ss * (classes + n):].reshape(ss * n, 4)
    cell = np.repeat(np.arange(ss), n)
    col = (cell % side).astype(_F32)
    row = (cell // side).astype(_F32)
    boxes = np.empty((ss * n, 4), _F32)
    boxes[:, 0] = (braw[:, 0] + col) / _F32(side) * _F32(imw)
    boxes[:, 1] = (braw[:, 1] + row) / _F32(side) * _F32(imh)
    p = 2.0 if sqrt else 1.0
    bw = braw[:, 2:4].astype(np.float64) ** p
    boxes[:, 2] = (bw[:, 0] * imw).astype(_F32)
    boxes[:, 3] = (bw[:, 1] * imh).astype(_F32)
    probs = _thresholded(scale[:, None] * cls_p[cell], thresh)
    return Detections(boxes, scale.copy(), probs)


# =========================================================================== NMS
def _nms_kind(kind) -> str:
    if isinstance(kind, str):
        k = kind.strip().lower()
        if k not in NMS_KINDS:
            raise ValueError(f"unknown nms kind {kind!r}; expected one of {NMS_KINDS}")
        return k
    k = int(kind)
    if not 0 <= k < len(NMS_KINDS):
        raise ValueError(f"unknown NMS_KIND value {kind!r}")
    return NMS_KINDS[k]


def _metric_fn(kind: str, beta: float):
    """The overlap measure each NMS_KIND thresholds in upstream's do_nms_sort / diounms_sort."""
    if kind == "greedynms":
        return box_diou  # diounms_sort's GREEDY_NMS branch: box_diou (exponent 0.6)
    if kind == "diounms":
        return lambda a, b: box_diounms(a, b, beta)
    return box_iou  # default (do_nms_sort) and CORNERS_NMS (plain IoU, box merging commented out)


_FULL_MATRIX_MAX = 6000  # up to this many boxes the pairwise overlap test is precomputed


class _Overlaps:
    """`metric(a, b) > thresh` between boxes, precomputed pairwise for small sets."""

    def __init__(self, boxes: np.ndarray, metric, thresh: float, block: int = 512):
        self.boxes, self.metric, self.thresh = boxes, metric, _F32(thresh)
        self.full = None
        m = boxes.shape[0]
        if m <= _FULL_MATRIX_MAX:
            self.full = np.zeros((m, m), dtype=bool)
            for s in range(0, m, block):
                a = boxes[s:s + block, None, :]
                self.full[s:s + block] = self.metric(a, boxes[None, :, :]) > self.thresh

    def row(self, i: int, others: np.ndarray) -> np.ndarray:
        if self.full is not None:
            return self.full[i, others]
        return self.metric(self.boxes[i][None, :], self.boxes[others]) > self.thresh


def _greedy(order: np.ndarray, ov: _Overlaps) -> np.ndarray:
    """Walk `order` (best first); each survivor suppresses the later ones it overlaps.
    Returns the suppressed mask over `order`."""
    m = order.size
    suppressed = np.zeros(m, dtype=bool)
    for i in range(m - 1):
        if suppressed[i]:
            continue
        suppressed[i + 1:] |= ov.row(order[i], order[i + 1:])
    return suppressed


def zero_objectness_swap(objectness: np.ndarray) -> tuple[np.ndarray, int]:
    """upstream's NMS preamble: walk the array, swapping every box with objectness == 0 with the
    last not-yet-moved one. Returns the resulting order and how many boxes stay in front."""
    zero = objectness == 0
    order = list(range(objectness.size))
    if not zero.any():
        return np.asarray(order, dtype=np.int64), objectness.size
    i, k = 0, objectness.size - 1
    while i <= k:
        if zero[order[i]]:
            order[i], order[k] = order[k], order[i]
            k -= 1
        else:
            i += 1
    return np.asarray(order, dtype=np.int64), k + 1


def _front_order(objectness: np.ndarray) -> np.ndarray:
    """Indices of the boxes with objectness != 0 in the order upstream's NMS sees them."""
    order, front = zero_objectness_swap(objectness)
    return order[:front]


def class_sort(perm: np.ndarray, p: np.ndarray) -> np.ndarray:
    """perm re-sorted by p descending, stably: upstream's qsort with nms_comparator_v3, which
    glibc runs as a stable merge sort, so equal probs keep the previous order."""
    return perm[np.argsort(-p[perm], kind="stable")]


def nms(dets: Detections, classes: int | None = None, thresh: float = 0.45,
        kind="default", beta: float = 0.6) -> Detections:
    """upstream's per-class NMS: do_nms_sort (kind 'default') or diounms_sort.

    Boxes with objectness == 0 take no part (upstream moves them to the end of the array
    and leaves them alone).  For every class k < classes (default: all), the boxes are
    sorted by prob[k] descending; each one whose prob[k] is still non-zero zeroes prob[k]
    of every later box whose overlap with it exceeds thresh.  Overlap: 'default' and
    'cornersnms' box_iou (CORNERS_NMS's box merging is commented out in upstream, so it is
    plain IoU NMS), 'greedynms' box_diou (DIoU with upstream's fixed exponent 0.6 on the
    distance term), 'diounms' box_diounms(beta) (beta = beta_nms).  kind may also be the
    NMS_KIND enum value 0..3.  Note that upstream's [yolo] parser maps 'cornersnms' to
    'default'; only [Gaussian_yolo] accepts it.

    Ties: upstream sorts the same array again for every class with glibc's qsort, which is
    a stable merge sort, so boxes with equal prob[k] stay in the order the previous
    classes' sorts left them.  This is reproduced (a persistent permutation re-sorted
    stably per class, starting from upstream's order after the objectness == 0 swaps),
    so even exact ties resolve as in upstream. Near-ties are decided by the float32 values,
    as upstream decides them.

    Returns a new Detections in the input order with the suppressed probs set to 0; no box
    is removed (upstream keeps them all; use .kept(thresh) / .to_dicts(thresh) for what it
    prints).
    """
    k_name = _nms_kind(kind)
    out = dets.copy()
    ncls = out.classes if classes is None else min(int(classes), out.classes)
    front = _front_order(out.objectness)
    if front.size == 0 or ncls == 0:
        return out
    ov = _Overlaps(out.boxes[front], _metric_fn(k_name, beta), thresh)
    probs = out.probs[front]
    perm = np.arange(front.size)
    for k in range(ncls):
        p = probs[:, k]
        perm = class_sort(perm, p)
        order = perm[p[perm] != 0]
        if order.size < 2:
            continue
        sup = _greedy(order, ov)
        p[order[sup]] = 0
    out.probs[front] = probs
    return out


def do_nms_sort(dets: Detections, classes: int | None = None, thresh: float = 0.45) -> Detections:
    """upstream do_nms_sort (= nms(kind='default'))."""
    return nms(dets, classes, thresh, "default")


def diounms_sort(dets: Detections, classes: int | None = None, thresh: float = 0.45,
                 nms_kind="greedynms", beta1: float = 0.6) -> Detections:
    """upstream diounms_sort (= nms(kind=nms_kind, beta=beta1))."""
    return nms(dets, classes, thresh, nms_kind, beta1)


def nms_obj(dets: Detections, classes: int | None = None, thresh: float = 0.45) -> Detections:
    """upstream do_nms_obj: class-agnostic NMS on objectness.

    Boxes with objectness != 0 by objectness descending; each one not yet suppressed
    suppresses every later one with IoU > thresh by setting its objectness and all its
    probs (classes < ``classes``, default all) to 0.  Returns a new Detections in the
    input order.
    """
    out = dets.copy()
    ncls = out.classes if classes is None else min(int(classes), out.classes)
    front = _front_order(out.objectness)
    if front.size < 2:
        return out
    order = front[np.argsort(-out.objectness[front], kind="stable")]
    ov = _Overlaps(out.boxes[order], box_iou, thresh)
    sup = _greedy(np.arange(order.size), ov)
    gone = order[sup]
    out.objectness[gone] = 0
    out.probs[gone, :ncls] = 0
    return out


# ====================================================================== get_network_boxes
def network_boxes(net, raw: dict, thresh: float, hier_thresh: float, imw: int, imh: int,
                  letter: bool = False, relative: bool = True):
    """upstream get_network_boxes: every detection layer's boxes, in layer order.

    ``raw`` is Network.predict_raw's dict. Returns (Detections, nms_kind, beta_nms, classes)
    where the NMS kind is that of the last yolo / Gaussian_yolo / region layer, as
    test_detector picks it.
    """
    netw, neth = net.options.width, net.options.height
    parts, kind, beta, classes = [], "default", 0.6, None
    for layer in net.layers:
        t = layer.type_name
        if t not in ("yolo", "Gaussian_yolo", "region", "detection"):
            continue
        out = raw[layer.index]
        if t == "yolo":
            d = yolo_detections(out, w=layer.out_w, h=layer.out_h, n=layer.n, classes=layer.classes,
                                anchors=layer.anchors, mask=layer.mask, netw=netw, neth=neth, imw=imw, imh=imh,
                                thresh=thresh, relative=relative, letter=letter, new_coords=bool(layer.new_coords))
        elif t == "Gaussian_yolo":
            d = gaussian_yolo_detections(out, w=layer.out_w, h=layer.out_h, n=layer.n, classes=layer.classes,
                                         anchors=layer.anchors, mask=layer.mask, netw=netw, neth=neth, imw=imw,
                                         imh=imh, thresh=thresh, relative=relative, letter=letter,
                                         yolo_point=layer.yolo_point)
        elif t == "region":
            d = region_detections(out, w=layer.out_w, h=layer.out_h, n=layer.n, classes=layer.classes,
                                  coords=layer.coords, anchors=layer.anchors, netw=netw, neth=neth, imw=imw,
                                  imh=imh, thresh=thresh, relative=relative, letter=letter)
        else:
            d = detection_detections(out, side=layer.side, n=layer.n, classes=layer.classes, sqrt=bool(layer.sqrt),
                                     imw=imw, imh=imh, thresh=thresh, relative=relative)
        parts.append(d)
        classes = layer.classes
        if t != "detection":
            kind, beta = getattr(layer, "nms_kind", "default"), getattr(layer, "beta_nms", 0.6)
    if classes is None:
        raise ValueError(f"{net.path}: the network has no [yolo], [Gaussian_yolo], [region] or [detection] layer")
    return Detections.concat(parts, classes), kind, beta, classes


def apply_nms(dets: Detections, classes: int, thresh: float, kind: str = "default", beta: float = 0.6) -> Detections:
    return nms(dets, classes, thresh, kind, beta)
