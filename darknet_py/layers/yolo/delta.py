"""Upstream: forward_yolo_layer's training part, process_batch, delta_yolo_box, delta_yolo_class,
averages_yolo_deltas (src/yolo_layer.c) and dx_box_iou (src/box.c).

Pure function of a [yolo] layer's training output and the truth array: returns upstream's
l.delta (sign: target minus output) and the numbers upstream prints and sums as the cost.
Everything is tensor code over all cells, anchors and truths at once. Upstream walks truths
in order and later truths can land on a cell an earlier truth already wrote; those writes
are applied in rounds (round r holds the r-th assignment of every cell), which keeps
upstream's order wherever it matters and stays vectorized.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ...box import box_giou, box_iou, box_iou_kind

FLT_MAX = 3.4028234663852886e38


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

    def line(self, layer, batch: int) -> str:
        """Upstream's per-layer line (show_details=1 form)."""
        name = {"mse": "mse", "giou": "giou"}.get(layer.iou_loss, "iou")
        count = self.count or 1  # upstream sets count = 1 before printing when no truth matched
        return (f"v3 ({name} loss, Normalizer: (iou: {layer.iou_normalizer:.2f}, obj: {layer.obj_normalizer:.2f}, "
                f"cls: {layer.cls_normalizer:.2f}) Region {layer.index} Avg (IOU: {self.tot_iou / count:f}), "
                f"count: {count}, class_loss = {self.classification_loss / batch:f}, "
                f"iou_loss = {(self.loss - self.classification_loss) / batch:f}, total_loss = {self.loss / batch:f} ")


def class_multipliers(layer) -> list[float] | None:
    """Upstream's get_classes_multipliers: max(counter)/counter, clipped at max_delta."""
    counters = getattr(layer, "counters_per_class", None)
    if not counters:
        return None
    counters = [max(1, c) for c in counters]
    top = float(max(counters))
    return [min(top / c, layer.max_delta) for c in counters]


def _finite(x: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


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


def dx_box_iou(pred: torch.Tensor, truth: torch.Tensor, kind: str) -> torch.Tensor:
    """upstream dx_box_iou: d(IoU-kind)/d(x, y, w, h) of pred, as upstream computes it. (M, 4)."""
    px, py, pw, ph = pred.unbind(-1)
    tx, ty, tw, th = truth.unbind(-1)
    top, bot, left, right = py - ph / 2, py + ph / 2, px - pw / 2, px + pw / 2
    pt, pb = torch.minimum(top, bot), torch.maximum(top, bot)
    pl, pr = torch.minimum(left, right), torch.maximum(left, right)
    tt, tb, tl, tr = ty - th / 2, ty + th / 2, tx - tw / 2, tx + tw / 2
    X = (pb - pt) * (pr - pl)
    Xhat = (tb - tt) * (tr - tl)
    Ih = torch.minimum(pb, tb) - torch.maximum(pt, tt)
    Iw = torch.minimum(pr, tr) - torch.maximum(pl, tl)
    I = Iw * Ih
    U = X + Xhat - I
    S = (px - tx) ** 2 + (py - ty) ** 2
    gCw = torch.maximum(pr, tr) - torch.minimum(pl, tl)
    gCh = torch.maximum(pb, tb) - torch.minimum(pt, tt)
    gC = gCw * gCh
    zero = torch.zeros_like(px)
    dX = {"t": -(pr - pl), "b": pr - pl, "l": -(pb - pt), "r": pb - pt}
    dI = {"t": torch.where(pt > tt, -Iw, zero), "b": torch.where(pb < tb, Iw, zero),
          "l": torch.where(pl > tl, -Ih, zero), "r": torch.where(pr < tr, Ih, zero)}
    dU = {k: dX[k] - dI[k] for k in dX}
    dC = {"t": torch.where(pt < tt, -gCw, zero), "b": torch.where(pb > tb, gCw, zero),
          "l": torch.where(pl < tl, -gCh, zero), "r": torch.where(pr > tr, gCh, zero)}
    p = {k: torch.where(U > 0, (U * dI[k] - I * dU[k]) / (U * U), zero) for k in dX}
    # a degenerate (flipped) pred box uses the other side's gradient, as upstream
    tb_ok, lr_ok = top < bot, left < right
    p_t = torch.where(tb_ok, p["t"], p["b"])
    p_b = torch.where(tb_ok, p["b"], p_t)
    p_l = torch.where(lr_ok, p["l"], p["r"])
    p_r = torch.where(lr_ok, p["r"], p_l)
    p = {"t": p_t, "b": p_b, "l": p_l, "r": p_r}
    if kind == "giou":
        g = {k: (gC * dU[k] - U * dC[k]) / (gC * gC) for k in dX}
        no_overlap = (Iw <= 0) | (Ih <= 0)
        p = {k: torch.where(no_overlap, g[k], torch.where(gC > 0, p[k] + g[k], p[k])) for k in dX}
    dx, dy = p["l"] + p["r"], p["t"] + p["b"]
    dw, dh = p["r"] - p["l"], p["b"] - p["t"]
    if kind in ("diou", "ciou"):
        Ct = torch.minimum(py - ph / 2, ty - th / 2)
        Cb = torch.maximum(py + ph / 2, ty + th / 2)
        Cl = torch.minimum(px - pw / 2, tx - tw / 2)
        Cr = torch.maximum(px + pw / 2, tx + tw / 2)
        Cw, Ch = Cr - Cl, Cb - Ct
        C = Cw * Cw + Ch * Ch
        one = torch.ones_like(px)
        dCt_dy = torch.where(pt < tt, one, zero)
        dCt_dh = torch.where(pt < tt, -0.5 * one, zero)
        dCb_dy = torch.where(pb > tb, one, zero)
        dCb_dh = torch.where(pb > tb, 0.5 * one, zero)
        dCl_dx = torch.where(pl < tl, one, zero)
        dCl_dw = torch.where(pl < tl, -0.5 * one, zero)
        dCr_dx = torch.where(pr > tr, one, zero)
        dCr_dw = torch.where(pr > tr, 0.5 * one, zero)
        dCw_dx, dCw_dw = dCr_dx - dCl_dx, dCr_dw - dCl_dw
        dCh_dy, dCh_dh = dCb_dy - dCt_dy, dCb_dh - dCt_dh
        CC = C * C
        ddx = (2 * (tx - px) * C - (2 * Cw * dCw_dx) * S) / CC
        ddy = (2 * (ty - py) * C - (2 * Ch * dCh_dy) * S) / CC
        ddw = (2 * Cw * dCw_dw) * S / CC
        ddh = (2 * Ch * dCh_dh) * S / CC
        if kind == "ciou":
            atan_d = torch.atan(tw / th) - torch.atan(pw / ph)
            ar_loss = 4 / (math.pi * math.pi) * atan_d * atan_d
            alpha = ar_loss / (1 - I / U + ar_loss + 0.000001)
            ddw = ddw + alpha * (8 / (math.pi * math.pi) * atan_d * ph)
            ddh = ddh + alpha * (-8 / (math.pi * math.pi) * atan_d * pw)
        no_overlap = (Iw <= 0) | (Ih <= 0)
        pos = C > 0
        dx = torch.where(no_overlap, ddx, torch.where(pos, dx + ddx, dx))
        dy = torch.where(no_overlap, ddy, torch.where(pos, dy + ddy, dy))
        dw = torch.where(no_overlap, ddw, torch.where(pos, dw + ddw, dw))
        dh = torch.where(no_overlap, ddh, torch.where(pos, dh + ddh, dh))
    return torch.stack([dx, dy, dw, dh], -1)


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
    d = _finite(d * norm.unsqueeze(1))
    if layer.max_delta != FLT_MAX:
        d = d.clamp(-layer.max_delta, layer.max_delta)
    return d


def yolo_delta(layer, out: torch.Tensor, truth: torch.Tensor, netw: int, neth: int):
    """Upstream's l.delta and statistics for one [yolo] layer in training.

    out: (N, A*(5+C), H, W) the layer's training output (logistic applied, scale_x_y
    adjusted). truth: (N, T, S) upstream's truth array (x, y, w, h, class, ...; a row with
    x == 0 ends an image's list). Returns (delta (N, A*(5+C), H, W), YoloStats).
    """
    n_img = out.shape[0]
    a, c, h, w = layer.n, layer.classes, layer.out_h, layer.out_w
    k = 5 + c
    out = out.detach().float().reshape(n_img, a, k, h, w).clone()
    dev = out.device
    anchors_host = np.asarray(layer.anchors, dtype=np.float32).reshape(-1, 2)
    anchors = _upload(anchors_host, dev)
    mask_t = _upload(np.asarray(layer.mask, dtype=np.int64), dev)
    mult_list = class_multipliers(layer)
    mult = _upload(np.asarray(mult_list, dtype=np.float32), dev) if mult_list is not None else None
    stats = YoloStats()
    sums = _DeviceSums()  # statistics stay on the device until one read at the end
    delta = torch.zeros_like(out)

    # the truth side is worked out on the host, in numpy (the loader's truth lives there):
    # which cells get which truth in which round depends only on the truth and the anchors
    truth = truth.detach().cpu().numpy() if isinstance(truth, torch.Tensor) else np.asarray(truth)
    truth = truth.astype(np.float32, copy=False)
    t_all = truth.shape[1]
    valid = np.cumprod(truth[:, :, 0] != 0, 1).astype(bool)  # upstream stops at x == 0
    n_truth = int(valid.sum(1).max()) if t_all else 0
    truth, valid = truth[:, :n_truth], valid[:, :n_truth]
    cls_all = np.trunc(truth[:, :, 4]).astype(np.int64)
    class_ok = valid & (cls_all >= 0) & (cls_all < c)
    truth_d, cls_all_d, class_ok_d = (_upload(t, dev) for t in (truth, cls_all, class_ok))
    if n_truth:
        out[:, :, 4] = _finite(out[:, :, 4])

    pred = pred_boxes(out, anchors[mask_t], netw, neth, bool(layer.new_coords))  # (N, A, H, W, 4)
    obj = out[:, :, 4]
    delta[:, :, 4] = layer.obj_normalizer * (0 - obj)
    best_t = None
    if n_truth:
        tb = truth_d[:, :, :4].view(n_img, 1, 1, 1, n_truth, 4)
        iou = box_iou(pred.unsqueeze(-2), tb)  # (N, A, H, W, T)
        iou = torch.where(class_ok_d.view(n_img, 1, 1, 1, n_truth), iou, torch.zeros_like(iou))
        best_iou, best_t = iou.max(-1)  # first of equal maxima, as upstream's strict '>'
        class_match = (out[:, :, 5:] > 0.25).any(2)
        best_match = torch.where(class_match, best_iou, torch.zeros_like(best_iou))
        ignore = best_match > layer.ignore_thresh
        if layer.objectness_smooth:
            d = layer.obj_normalizer * (best_match - obj)
            delta[:, :, 4] = torch.where(ignore & (d > delta[:, :, 4]), d, delta[:, :, 4])
        else:
            delta[:, :, 4] = torch.where(ignore, torch.zeros_like(obj), delta[:, :, 4])

    cells = _Cells(out, delta)

    def geometry(flat_cells, anchor_n):
        rem = flat_cells % (h * w)
        j, i = rem // w, rem % w
        aw, ah = anchors[anchor_n, 0], anchors[anchor_n, 1]
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

    def apply(flat_cells, anchor_n, truth_rows, cls, truth_thresh_stage, smooth_iou=None):
        """Apply one round of assignments (distinct cells)."""
        g = geometry(flat_cells, anchor_n)
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

    # stage 1: cells whose best truth overlaps above truth_thresh (never with the default
    # truth_thresh=1; these cells depend on the output, so this stage reads the device)
    if n_truth and layer.truth_thresh < 1:
        sel = best_iou > layer.truth_thresh
        if sel.any():
            cell_index = torch.arange(n_img * a * h * w, device=dev).view(n_img, a, h, w)
            fc = cell_index[sel]
            b = fc // (a * h * w)
            t = best_t[sel]
            rows = truth_d[b, t]
            an = mask_t[(fc // (h * w)) % a]
            apply(fc, an, rows, cls_all_d[b, t], True, best_iou[sel])

    # stage 2: every truth is assigned to its best anchor's cell, plus (iou_thresh < 1) to
    # every other masked anchor that matches it well enough; rounds of distinct cells
    for fc, an, rows, cls in _assignment_rounds(layer, truth, class_ok, cls_all, anchors_host, n_img, netw, neth):
        apply(*(_upload(v, dev) for v in (fc, an, rows, cls)), False)

    if layer.iou_thresh < 1.0:
        # upstream's averages_yolo_deltas: box deltas divided by the number of positive class deltas
        d = cells.delta
        npos = (d[:, 5:] > 0).sum(1)
        sel = ((d[:, 4] != 0) & (npos > 0)).unsqueeze(1)
        d[:, :4] = torch.where(sel, d[:, :4] / npos.clamp(min=1).unsqueeze(1).to(d.dtype), d[:, :4])

    delta = cells.result()
    no_box = delta.clone()
    no_box[:, :, :4] = 0
    sums.add("loss", (delta.reshape(-1).double() ** 2).sum())
    sums.add("classification_loss", (no_box.reshape(-1).double() ** 2).sum())
    got = sums.read()  # the one host read of this layer
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
    return delta.reshape(n_img, a * k, h, w), stats


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
