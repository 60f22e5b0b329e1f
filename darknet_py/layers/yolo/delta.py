"""Upstream: forward_yolo_layer's training part, process_batch, delta_yolo_box, delta_yolo_class,
averages_yolo_deltas (src/yolo_layer.c); the IoU losses' gradient (dx_box_iou) is box.py's.

Pure function of a [yolo] layer's training output and the truth array: returns upstream's
l.delta (sign: target minus output) and the numbers upstream prints and sums as the cost.
Everything is tensor code over all cells, anchors and truths at once. Upstream walks truths
in order and later truths can land on a cell an earlier truth already wrote; those writes
are applied in rounds (round r holds the r-th assignment of every cell), which keeps
upstream's order wherever it matters and stays vectorized.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ...box import box_giou, box_iou, box_iou_kind, dx_box_iou
from ..delta_common import FLT_MAX, class_multipliers, finite


@dataclass
class YoloStats:
    """What forward_yolo_layer accumulates and prints for one layer and one mini-batch."""

    tot_iou: float = 0.0
    tot_iou_loss: float = 0.0
    tot_giou_loss: float = 0.0
    count: int = 0
    class_count: int = 0
    total_bbox: int = 0
    rewritten_bbox: int = 0
    loss: float = 0.0  # sum of squared deltas (upstream's pow(mag_array(delta), 2))
    classification_loss: float = 0.0
    cost: float = 0.0  # what the layer adds to the network cost
    # yolo_delta(defer=True): the device sums not read yet; resolve() reads them
    _resolve: object = field(default=None, repr=False, compare=False)

    @property
    def pending(self) -> bool:
        return self._resolve is not None

    def resolve(self) -> "YoloStats":
        if self._resolve is not None:
            read, self._resolve = self._resolve, None
            read()
        return self

    def line(self, layer, batch: int) -> str:
        """Upstream's per-layer line (show_details=1 form)."""
        name = {"mse": "mse", "giou": "giou"}.get(layer.iou_loss, "iou")
        count = self.count or 1  # upstream sets count = 1 before printing when no truth matched
        return (f"v3 ({name} loss, Normalizer: (iou: {layer.iou_normalizer:.2f}, obj: {layer.obj_normalizer:.2f}, "
                f"cls: {layer.cls_normalizer:.2f}) Region {layer.index} Avg (IOU: {self.tot_iou / count:f}), "
                f"count: {count}, class_loss = {self.classification_loss / batch:f}, "
                f"iou_loss = {(self.loss - self.classification_loss) / batch:f}, total_loss = {self.loss / batch:f} ")


def pred_boxes(out: torch.Tensor, anchors_wh: torch.Tensor, netw: int, neth: int, new_coords: bool) -> torch.Tensor:
    """upstream get_yolo_box for every cell: (N, A, H, W, 4) x, y, w, h relative to the image."""
    n, a, _, h, w = out.shape
    col = torch.arange(w, device=out.device, dtype=out.dtype)
    row = torch.arange(h, device=out.device, dtype=out.dtype).view(h, 1)
    aw = anchors_wh[:, 0].view(1, a, 1, 1)
    ah = anchors_wh[:, 1].view(1, a, 1, 1)
    bx = (col + out[:, :, 0]) / w
    by = (row + out[:, :, 1]) / h
    if new_coords:
        bw = out[:, :, 2] * out[:, :, 2] * 4 * aw / netw
        bh = out[:, :, 3] * out[:, :, 3] * 4 * ah / neth
    else:
        bw = torch.exp(out[:, :, 2]) * aw / netw
        bh = torch.exp(out[:, :, 3]) * ah / neth
    return torch.stack([bx, by, bw, bh], -1)


class _Cells:
    """Flat views of the delta and output tensors by (batch, anchor, row, col) cell."""

    def __init__(self, out: torch.Tensor, delta: torch.Tensor):
        n, a, k, h, w = out.shape
        self.k = k
        self.out = out.permute(0, 1, 3, 4, 2).reshape(-1, k)  # (cells, 5+C)
        self.delta = delta.permute(0, 1, 3, 4, 2).reshape(-1, k)  # a copy: written back at the end
        self.shape = (n, a, h, w, k)

    def result(self) -> torch.Tensor:
        n, a, h, w, k = self.shape
        return self.delta.view(n, a, h, w, k).permute(0, 1, 4, 2, 3).contiguous()


def _class_delta(layer, out_c, cur, cls, mult):
    """upstream delta_yolo_class for M cells at once. out_c, cur: (M, C); cls: (M,)."""
    m, c = out_c.shape
    idx = torch.arange(m, device=out_c.device)
    eps = layer.label_smooth_eps
    onehot = torch.zeros_like(out_c)
    onehot[idx, cls] = 1
    y_true = onehot * (1 - eps) + 0.5 * eps if eps else onehot
    has = cur[idx, cls] != 0
    # cell already holds this class's delta (an earlier truth): only that class is rewritten
    rd = y_true[idx, cls] - out_c[idx, cls]
    one_cls = torch.where(torch.isfinite(rd), rd, cur[idx, cls])
    if mult is not None:
        one_cls = one_cls * mult[cls]
    if layer.focal_loss:
        pt = out_c[idx, cls] + 0.000000000000001
        grad = -(1 - pt) * (2 * pt * torch.log(pt) + pt - 1)
        full = (onehot - out_c) * (0.5 * grad).unsqueeze(1)
    else:
        r = y_true - out_c
        full = torch.where(torch.isfinite(r), r, cur)
        if mult is not None:
            full[idx, cls] = full[idx, cls] * mult[cls] * layer.cls_normalizer
    new = torch.where(has.unsqueeze(1), cur, full)
    new[idx, cls] = torch.where(has, one_cls, new[idx, cls])
    return new


def _box_delta(layer, pred, truth, x4, scale, norm):
    """upstream delta_yolo_box's increment for M assignments. x4: the raw x, y, w, h outputs."""
    if layer.iou_loss == "mse":
        i_, j_, aw, ah = pred["i"], pred["j"], pred["aw"], pred["ah"]
        tx = truth[:, 0] * pred["lw"] - i_
        ty = truth[:, 1] * pred["lh"] - j_
        if layer.new_coords:
            tw = torch.sqrt(truth[:, 2] * pred["netw"] / (4 * aw))
            th = torch.sqrt(truth[:, 3] * pred["neth"] / (4 * ah))
        else:
            tw = torch.log(truth[:, 2] * pred["netw"] / aw)
            th = torch.log(truth[:, 3] * pred["neth"] / ah)
        target = torch.stack([tx, ty, tw, th], 1)
        return (scale * norm).unsqueeze(1) * (target - x4)
    box = pred["box"].clone()
    box[:, 2] = torch.where(box[:, 2] == 0, torch.ones_like(box[:, 2]), box[:, 2])
    box[:, 3] = torch.where(box[:, 3] == 0, torch.ones_like(box[:, 3]), box[:, 3])
    d = dx_box_iou(box, truth[:, :4], layer.iou_loss)
    if not layer.new_coords:
        d[:, 2:] = d[:, 2:] * torch.exp(x4[:, 2:])
    d = finite(d * norm.unsqueeze(1))
    if layer.max_delta != FLT_MAX:
        d = d.clamp(-layer.max_delta, layer.max_delta)
    return d


def yolo_delta(layer, out: torch.Tensor, truth: torch.Tensor, netw: int, neth: int, defer: bool = False):
    """Upstream's l.delta and statistics for one [yolo] layer in training.

    out: (N, A*(5+C), H, W) the layer's training output (logistic applied, scale_x_y
    adjusted). truth: (N, T, S) upstream's truth array (x, y, w, h, class, ...; a row with
    x == 0 ends an image's list). Returns (delta (N, A*(5+C), H, W), YoloStats).

    The steps follow forward_yolo_layer: every cell's objectness (toward 0, ignored near a
    truth), the cells above truth_thresh, every truth at its best anchors, then
    averages_yolo_deltas and the statistics. defer: the statistics that live on the device are
    read at stats.resolve() (one read; until then the host does not wait for the device).
    """
    p = _YoloPass(layer, out, netw, neth)
    t = _HostTruth(truth, layer.classes, p.dev)
    best = _objectness_deltas(p, t)
    cells = _Cells(p.out, p.delta)
    # stage 1: cells whose best truth overlaps above truth_thresh (never with the default
    # truth_thresh=1; these cells depend on the output, so this stage reads the device)
    if best is not None and layer.truth_thresh < 1:
        _truth_thresh_cells(p, t, cells, *best)
    # stage 2: every truth is assigned to its best anchor's cell, plus (iou_thresh < 1) to
    # every other masked anchor that matches it well enough; rounds of distinct cells
    for fc, an, rows, cls in _assignment_rounds(layer, t.rows, t.class_ok, t.cls, p.anchors_host, p.n_img,
                                                netw, neth):
        _apply_round(p, cells, *(_upload(v, p.dev) for v in (fc, an, rows, cls)), False)
    if layer.iou_thresh < 1.0:
        _average_box_deltas(cells)
    return _finish(p, cells.result(), defer)


class _YoloPass:
    """One layer's training pass: its output (N, A, 5+C, H, W) and delta, anchors, mask,
    class multipliers and the statistics being gathered."""

    def __init__(self, layer, out: torch.Tensor, netw: int, neth: int):
        self.layer, self.netw, self.neth = layer, netw, neth
        self.n_img = out.shape[0]
        a, c, h, w = layer.n, layer.classes, layer.out_h, layer.out_w
        self.shape = (self.n_img, a, 5 + c, h, w)
        self.out = out.detach().float().reshape(self.shape).clone()
        self.dev = dev = self.out.device
        self.anchors_host = np.asarray(layer.anchors, dtype=np.float32).reshape(-1, 2)
        self.anchors = _upload(self.anchors_host, dev)
        self.mask_t = _upload(np.asarray(layer.mask, dtype=np.int64), dev)
        mult_list = class_multipliers(layer)
        self.mult = _upload(np.asarray(mult_list, dtype=np.float32), dev) if mult_list is not None else None
        self.stats = YoloStats()
        self.sums = _DeviceSums()  # statistics stay on the device until one read at the end
        self.delta = torch.zeros_like(self.out)


class _HostTruth:
    """The truth side, worked out on the host in numpy (the loader's truth lives there): which
    cells get which truth in which round depends only on the truth and the anchors. Rows end
    at each image's first x == 0, as upstream's loop; a row counts if its class is in range."""

    def __init__(self, truth, classes: int, dev: torch.device):
        truth = truth.detach().cpu().numpy() if isinstance(truth, torch.Tensor) else np.asarray(truth)
        truth = truth.astype(np.float32, copy=False)
        t_all = truth.shape[1]
        valid = np.cumprod(truth[:, :, 0] != 0, 1).astype(bool)  # upstream stops at x == 0
        self.count = n_truth = int(valid.sum(1).max()) if t_all else 0
        self.rows, valid = truth[:, :n_truth], valid[:, :n_truth]  # (N, T, S)
        self.cls = np.trunc(self.rows[:, :, 4]).astype(np.int64)
        self.class_ok = valid & (self.cls >= 0) & (self.cls < classes)
        self.rows_d, self.cls_d, self.class_ok_d = (_upload(v, dev) for v in (self.rows, self.cls, self.class_ok))


def _objectness_deltas(p: _YoloPass, t: _HostTruth):
    """Every cell's objectness delta toward 0, left out (or, with objectness_smooth, raised)
    where its box overlaps a truth above ignore_thresh. Returns the best truth of each cell
    (best_iou, best_t), or None without truth."""
    layer, out, delta = p.layer, p.out, p.delta
    if t.count:
        out[:, :, 4] = finite(out[:, :, 4])
    pred = pred_boxes(out, p.anchors[p.mask_t], p.netw, p.neth, bool(layer.new_coords))  # (N, A, H, W, 4)
    obj = out[:, :, 4]
    delta[:, :, 4] = layer.obj_normalizer * (0 - obj)
    if not t.count:
        return None
    tb = t.rows_d[:, :, :4].view(p.n_img, 1, 1, 1, t.count, 4)
    iou = box_iou(pred.unsqueeze(-2), tb)  # (N, A, H, W, T)
    iou = torch.where(t.class_ok_d.view(p.n_img, 1, 1, 1, t.count), iou, torch.zeros_like(iou))
    best_iou, best_t = iou.max(-1)  # first of equal maxima, as upstream's strict '>'
    class_match = (out[:, :, 5:] > 0.25).any(2)
    best_match = torch.where(class_match, best_iou, torch.zeros_like(best_iou))
    ignore = best_match > layer.ignore_thresh
    if layer.objectness_smooth:
        d = layer.obj_normalizer * (best_match - obj)
        delta[:, :, 4] = torch.where(ignore & (d > delta[:, :, 4]), d, delta[:, :, 4])
    else:
        delta[:, :, 4] = torch.where(ignore, torch.zeros_like(obj), delta[:, :, 4])
    return best_iou, best_t


def _truth_thresh_cells(p: _YoloPass, t: _HostTruth, cells: "_Cells", best_iou, best_t) -> None:
    """The cells whose best truth overlaps above truth_thresh take that truth's deltas."""
    sel = best_iou > p.layer.truth_thresh
    if not sel.any():
        return
    n_img, a, _, h, w = p.shape
    cell_index = torch.arange(n_img * a * h * w, device=p.dev).view(n_img, a, h, w)
    fc = cell_index[sel]
    b = fc // (a * h * w)
    ti = best_t[sel]
    an = p.mask_t[(fc // (h * w)) % a]
    _apply_round(p, cells, fc, an, t.rows_d[b, ti], t.cls_d[b, ti], True, best_iou[sel])


def _cell_geometry(p: _YoloPass, cells: "_Cells", flat_cells, anchor_n) -> dict:
    """get_yolo_box of M cells and what delta_yolo_box's target needs of them."""
    layer, netw, neth = p.layer, p.netw, p.neth
    h, w = p.shape[3], p.shape[4]
    rem = flat_cells % (h * w)
    j, i = rem // w, rem % w
    aw, ah = p.anchors[anchor_n, 0], p.anchors[anchor_n, 1]
    x4 = cells.out[flat_cells, :4]
    if layer.new_coords:
        bw = x4[:, 2] * x4[:, 2] * 4 * aw / netw
        bh = x4[:, 3] * x4[:, 3] * 4 * ah / neth
    else:
        bw = torch.exp(x4[:, 2]) * aw / netw
        bh = torch.exp(x4[:, 3]) * ah / neth
    box = torch.stack([(i + x4[:, 0]) / w, (j + x4[:, 1]) / h, bw, bh], 1)
    return {"box": box, "i": i.float(), "j": j.float(), "aw": aw, "ah": ah, "lw": w, "lh": h,
            "netw": netw, "neth": neth, "x4": x4}


def _apply_round(p: _YoloPass, cells: "_Cells", flat_cells, anchor_n, truth_rows, cls, truth_thresh_stage,
                 smooth_iou=None) -> None:
    """One round of assignments (distinct cells): delta_yolo_box (accumulating), the
    objectness and delta_yolo_class, and the IoU statistics of stage 2."""
    layer, mult, sums, stats = p.layer, p.mult, p.sums, p.stats
    g = _cell_geometry(p, cells, flat_cells, anchor_n)
    cm = mult[cls] if mult is not None else torch.ones_like(truth_rows[:, 0])
    cur_box = cells.delta[flat_cells, :4]
    sums.add("rewritten_bbox", (cur_box != 0).any(1).sum())
    scale = 2 - truth_rows[:, 2] * truth_rows[:, 3]
    inc = _box_delta(layer, g, truth_rows, g["x4"], scale, layer.iou_normalizer * cm)
    cells.delta[flat_cells, :4] = cur_box + inc
    stats.total_bbox += int(flat_cells.shape[0])
    o = cells.out[flat_cells, 4]
    cur_obj = cells.delta[flat_cells, 4]
    if truth_thresh_stage:
        iou_mult = smooth_iou * smooth_iou
        new_obj = layer.obj_normalizer * ((iou_mult if layer.objectness_smooth else 1) - o)
    else:
        target = cm * layer.obj_normalizer * (1 - o)
        new_obj = torch.where(cur_obj == 0, target, cur_obj) if layer.objectness_smooth else target
    cells.delta[flat_cells, 4] = new_obj
    cells.delta[flat_cells, 5:] = _class_delta(layer, cells.out[flat_cells, 5:], cells.delta[flat_cells, 5:],
                                               cls, mult)
    if truth_thresh_stage and layer.objectness_smooth:
        cells.delta[flat_cells, 5 + cls] = cm * (iou_mult - cells.out[flat_cells, 5 + cls])
    if not truth_thresh_stage:
        ious = box_iou(g["box"], truth_rows[:, :4])
        gious = box_giou(g["box"], truth_rows[:, :4])
        sums.add("tot_iou", ious.sum())
        sums.add("tot_iou_loss", (1 - ious).sum())
        sums.add("tot_giou_loss", (1 - gious).sum())
        stats.count += int(flat_cells.shape[0])
        stats.class_count += int(flat_cells.shape[0])


def _average_box_deltas(cells: "_Cells") -> None:
    """upstream's averages_yolo_deltas: box deltas divided by the number of positive class deltas."""
    d = cells.delta
    npos = (d[:, 5:] > 0).sum(1)
    sel = ((d[:, 4] != 0) & (npos > 0)).unsqueeze(1)
    d[:, :4] = torch.where(sel, d[:, :4] / npos.clamp(min=1).unsqueeze(1).to(d.dtype), d[:, :4])


def _finish(p: _YoloPass, delta: torch.Tensor, defer: bool = False):
    """The losses upstream prints and the layer's cost, from the final delta (N, A, 5+C, H, W):
    summed on the device, read now or (defer) at stats.resolve()."""
    # sums of squares in float64, read on the fly (no float64 copy of the delta)
    box_sq = torch.linalg.vector_norm(delta[:, :, :4], dtype=torch.float64) ** 2
    rest_sq = torch.linalg.vector_norm(delta[:, :, 4:], dtype=torch.float64) ** 2
    p.sums.add("loss", box_sq + rest_sq)
    p.sums.add("classification_loss", rest_sq)
    p.stats._resolve = lambda: _read_stats(p)
    if not defer:
        p.stats.resolve()
    n_img, a, k, h, w = p.shape
    return delta.reshape(n_img, a * k, h, w), p.stats


def _read_stats(p: _YoloPass) -> None:
    layer, stats = p.layer, p.stats
    got = p.sums.read()  # the one host read of this layer
    stats.tot_iou, stats.tot_iou_loss, stats.tot_giou_loss = got["tot_iou"], got["tot_iou_loss"], got["tot_giou_loss"]
    stats.rewritten_bbox = int(got["rewritten_bbox"])
    stats.loss = got["loss"]
    stats.classification_loss = layer.obj_normalizer * got["classification_loss"]
    count = stats.count or 1
    if layer.iou_loss == "mse":
        stats.cost = stats.loss
    else:
        tot = stats.tot_giou_loss if layer.iou_loss == "giou" else stats.tot_iou_loss
        stats.cost = (layer.iou_normalizer * (tot / count) if stats.count else 0.0) + stats.classification_loss


def _upload(a: np.ndarray, dev: torch.device) -> torch.Tensor:
    """A host array as a tensor on `dev`, without making the host wait (pinned, non-blocking)
    on CUDA."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    if dev.type == "cpu":
        return t
    return t.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else t.to(dev)


class _DeviceSums:
    """Scalars accumulated on the device and read back together."""

    NAMES = ("tot_iou", "tot_iou_loss", "tot_giou_loss", "rewritten_bbox", "loss", "classification_loss")

    def __init__(self):
        self.parts: dict[str, list[torch.Tensor]] = {n: [] for n in self.NAMES}

    def add(self, name: str, value: torch.Tensor) -> None:
        self.parts[name].append(value.double())

    def read(self) -> dict[str, float]:
        present = [n for n in self.NAMES if self.parts[n]]
        values = torch.stack([torch.stack(self.parts[n]).sum() for n in present]).tolist() if present else []
        out = dict.fromkeys(self.NAMES, 0.0)
        out.update(zip(present, values))
        return out


def _assignment_rounds(layer, truth, class_ok, cls_all, anchors, n_img: int, netw: int, neth: int):
    """Upstream's truth loop of forward_yolo_layer, planned on the host (numpy): every truth
    goes to the cell of its best anchor (among the first `num`), when that anchor is in this
    layer's mask, and with iou_thresh < 1 also to each other masked anchor it matches above
    iou_thresh. Yields rounds (flat cell, anchor, truth row, class) of distinct cells: round r
    holds each cell's r-th assignment in upstream's order (image, truth, best anchor first)."""
    a, h, w = layer.n, layer.out_h, layer.out_w
    b_idx, t_idx = np.nonzero(class_ok)
    if b_idx.size == 0:
        return
    t_all = truth.shape[1]
    rows = truth[b_idx, t_idx]
    cls = cls_all[b_idx, t_idx]
    i = np.clip((rows[:, 0] * np.float32(w)).astype(np.int64), 0, w - 1)
    j = np.clip((rows[:, 1] * np.float32(h)).astype(np.int64), 0, h - 1)
    total = layer.total  # upstream searches the first num anchors
    shape_t = np.zeros((rows.shape[0], 1, 4), np.float32)
    shape_t[:, 0, 2:] = rows[:, 2:4]
    shape_a = np.zeros((1, total, 4), np.float32)
    shape_a[0, :, 2] = anchors[:total, 0] / np.float32(netw)
    shape_a[0, :, 3] = anchors[:total, 1] / np.float32(neth)
    best_n = np.argmax(box_iou(shape_a, shape_t), 1)  # (M,), first of equal maxima
    in_mask = np.full(max(total, anchors.shape[0]), -1, np.int64)
    in_mask[np.asarray(layer.mask, dtype=np.int64)] = np.arange(a)
    pairs = [(best_n, np.zeros_like(best_n))]  # (anchor, order within the truth)
    if layer.iou_thresh < 1.0:
        kind_iou = box_iou_kind(shape_a, shape_t, layer.iou_thresh_kind)
        for nn_ in range(total):
            extra = (in_mask[nn_] >= 0) & (best_n != nn_) & (kind_iou[:, nn_] > np.float32(layer.iou_thresh))
            pairs.append((np.where(extra, nn_, -1), np.full_like(best_n, nn_ + 1)))
    an = np.concatenate([p[0] for p in pairs])
    order_in_truth = np.concatenate([p[1] for p in pairs])
    m_idx = np.tile(np.arange(rows.shape[0]), len(pairs))
    keep = (an >= 0) & (in_mask[np.maximum(an, 0)] >= 0)
    an, order_in_truth, m_idx = an[keep], order_in_truth[keep], m_idx[keep]
    if an.size == 0:
        return
    bb = b_idx[m_idx]
    fc = ((bb * a + in_mask[an]) * h + j[m_idx]) * w + i[m_idx]
    # upstream's order: image, truth, best anchor first then the others by index
    key = (bb * (t_all + 1) + t_idx[m_idx]) * (total + 2) + order_in_truth
    order = np.argsort(key, kind="stable")
    fc, an, m_idx = fc[order], an[order], m_idx[order]
    # rank of each assignment among those of the same cell, in upstream's order: a stable
    # sort by cell keeps that order inside each cell's run
    by_cell = np.argsort(fc, kind="stable")
    sorted_fc = fc[by_cell]
    pos = np.arange(fc.size)
    starts = np.concatenate([[True], sorted_fc[1:] != sorted_fc[:-1]])
    run_start = np.maximum.accumulate(np.where(starts, pos, 0))
    rank = np.empty_like(fc)
    rank[by_cell] = pos - run_start
    for r in range(int(rank.max()) + 1):
        s = rank == r
        yield fc[s], an[s], rows[m_idx[s]], cls[m_idx[s]]
