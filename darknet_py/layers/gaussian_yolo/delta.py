"""Upstream: forward_gaussian_yolo_layer's training part, get_gaussian_yolo_box,
delta_gaussian_yolo_box, delta_gaussian_yolo_class, averages_gaussian_yolo_deltas and
backward_gaussian_yolo_layer (src/gaussian_yolo_layer.c); dx_box_iou (src/box.c).

Pure function of a [Gaussian_yolo] layer's training output (logistic applied to everything
but mu_w and mu_h, scale_x_y applied to mu_x and mu_y) and the truth array: returns upstream's
l.delta (target minus output) and the numbers upstream prints and sums as the layer cost.

What the delta means: backward_gaussian_yolo_layer adds l.delta unchanged (times 1 in the
CPU build, times delta_normalizer in the CUDA build, as for [yolo]; the training loop treats
both detection layers alike) to the previous layer's delta. Like [yolo], the logistic inside
the layer is not differentiated, so the surrogate -sum(delta * input) hands the previous
layer exactly upstream's delta.

Box deltas accumulate (+=), objectness and class deltas overwrite, and whether a class
delta rewrites every class or only the truth's depends on the cell's current class-0 delta,
so a cell hit by several truths is handled in rounds (round r holds the r-th assignment of
every cell), in upstream's order. The float/double mix of delta_gaussian_yolo_box is
followed: double where the C code computes in double, rounded to float where it stores.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ...box import box_giou, box_iou, box_iou_kind, dx_box_iou
from ..delta_common import (FLT_MAX, c_div, c_fsum, c_mag2, cell_truth_iou, class_map, class_multipliers, finite,
                            occurrence_rank)
from ..region.delta import RegionStats

F32 = torch.float32
F64 = torch.float64
SIGMA_CONST = 0.3  # upstream's float sigma_const
EPSI = 1e-9  # upstream's float epsi = pow(10, -9)


@dataclass
class GaussianStats(RegionStats):
    """What forward_gaussian_yolo_layer accumulates and prints for one mini-batch: the
    region layer's counters (its total_bbox/rewritten_bbox stay 0 too) and these."""

    recall75: float = 0.0
    loss: float = 0.0  # pow(mag_array(l.delta), 2)
    class_loss: float = 0.0  # without the 8 box entries
    except_uc_loss: float = 0.0  # without entries 4..7 (mu_w, sigma_w, mu_h, sigma_h)

    def line(self, layer, batch: int) -> str:
        """Upstream's fprintf(stderr) line. Its iou_loss is the x/y entries' part and its uc_loss
        the w/h entries' part (upstream's naming)."""
        f = np.float32
        loss = f(self.loss) / f(batch)
        class_loss = f(self.class_loss) / f(batch)
        uc_loss = (f(self.loss) - f(self.except_uc_loss)) / f(batch)
        iou_loss = (f(self.except_uc_loss) - f(self.class_loss)) / f(batch)
        return (f"Region {layer.index} Avg IOU: {c_div(self.avg_iou, self.count)}, "
                f"Class: {c_div(self.avg_cat, self.class_count)}, Obj: {c_div(self.avg_obj, self.count)}, "
                f"No Obj: {c_div(self.avg_anyobj, self.cells)}, .5R: {c_div(self.recall, self.count)}, "
                f".75R: {c_div(self.recall75, self.count)},  count: {self.count}, class_loss = {class_loss:.2f}, "
                f"iou_loss = {iou_loss:.2f}, uc_loss = {uc_loss:.2f}, total_loss = {loss:.2f} ")


def gaussian_boxes(x8, i, j, aw, ah, lw, lh, netw, neth, point):
    """get_gaussian_yolo_box for M cells. x8: the (M, 8) outputs mu_x, s_x, mu_y, s_y, mu_w, ..."""
    bw = (torch.exp(x8[:, 4].double()) * aw.double() / netw).float()
    bh = (torch.exp(x8[:, 6].double()) * ah.double() / neth).float()
    bx = (i + x8[:, 0]) / lw
    by = (j + x8[:, 2]) / lh
    if point == "left_top":
        bx, by = bx + bw / 2, by + bh / 2
    elif point == "right_bottom":
        bx, by = bx - bw / 2, by - bh / 2
    return torch.stack([bx, by, bw, bh], 1)


def _box_increment(layer, x8, i, j, aw, ah, lw, lh, netw, neth, truth4, scale, iou_norm):
    """delta_gaussian_yolo_box (accumulate=1) for M cells: the (M, 8) increment and the value it
    returns (IoU for mse, GIoU otherwise)."""
    pred = gaussian_boxes(x8, i, j, aw, ah, lw, lh, netw, neth, layer.yolo_point)
    ret = box_iou(pred, truth4) if layer.iou_loss == "mse" else box_giou(pred, truth4)
    pred = pred.clone()
    pred[:, 2] = torch.where(pred[:, 2] == 0, torch.ones_like(pred[:, 2]), pred[:, 2])
    pred[:, 3] = torch.where(pred[:, 3] == 0, torch.ones_like(pred[:, 3]), pred[:, 3])
    tx = truth4[:, 0] * lw - i
    ty = truth4[:, 1] * lh - j
    tw = torch.log(((truth4[:, 2] * netw) / aw).double()).float()
    th = torch.log(((truth4[:, 3] * neth) / ah).double()).float()
    if layer.yolo_point == "left_top":
        tx = (truth4[:, 0] - truth4[:, 2] / 2) * lw - i
        ty = (truth4[:, 1] - truth4[:, 3] / 2) * lh - j
    elif layer.yolo_point == "right_bottom":
        tx = (truth4[:, 0] + truth4[:, 2] / 2) * lw - i
        ty = (truth4[:, 1] + truth4[:, 3] / 2) * lh - j
    mu = [x8[:, 0], x8[:, 2], x8[:, 4], x8[:, 6]]
    sig = [x8[:, 1], x8[:, 3], x8[:, 5], x8[:, 7]]
    diff = [tx - mu[0], ty - mu[1], tw - mu[2], th - mu[3]]
    sc = torch.tensor(SIGMA_CONST, dtype=F32)
    eps = torch.tensor(EPSI, dtype=F32)
    root2pi = math.sqrt(math.pi * 2.0)
    d_mu, d_sig = [], []
    scale64 = scale.double()
    for dk, s in zip(diff, sig):
        ie = dk / s  # float
        ie2 = ie * ie  # float (pow in double of a float, rounded back: the same)
        s_c = (s + sc).double()
        nd = (torch.exp(ie2.double() * -0.5) / (root2pi * s_c)).float()
        temp = (0.5 / (nd + eps).double() * nd.double() * scale64).float()
        d_mu.append(((temp * ie).double() * (1.0 / s.double())).float())
        d_sig.append((temp.double() * ((ie2 / s).double() - 1.0 / s_c)).float())
    if layer.iou_loss != "mse":
        g = dx_box_iou(pred, truth4, layer.iou_loss)
        dx, dy, dw, dh = g.unbind(1)
        if layer.yolo_point == "left_top":
            dx, dy = dx - dw / 2, dy - dh / 2
        elif layer.yolo_point == "right_bottom":
            dx, dy = dx + dw / 2, dy + dh / 2
        dw = (dw.double() * torch.exp(x8[:, 4].double())).float()
        dh = (dh.double() * torch.exp(x8[:, 6].double())).float()
        d_mu = [dx, dy, dw, dh]
    d_mu = [finite(d * iou_norm) for d in d_mu]
    d_sig = [finite(d * layer.uc_normalizer) for d in d_sig]
    if layer.max_delta != FLT_MAX:
        d_mu = [d.clamp(-layer.max_delta, layer.max_delta) for d in d_mu]
        d_sig = [d.clamp(-layer.max_delta, layer.max_delta) for d in d_sig]
    inc = torch.stack([d_mu[0], d_sig[0], d_mu[1], d_sig[1], d_mu[2], d_sig[2], d_mu[3], d_sig[3]], 1)
    return inc, ret


def _class_write(layer, out_c, cur, cls, mult):
    """delta_gaussian_yolo_class for M distinct cells: new class deltas and avg_cat's terms.

    A cell whose class-0 delta is already nonzero only gets the truth's class rewritten."""
    m, c = out_c.shape
    idx = torch.arange(m, device=out_c.device)
    eps = layer.label_smooth_eps
    has = cur[:, 0] != 0
    pick = out_c[idx, cls]
    one = 1.0 * (1 - eps) + 0.5 * eps if eps else 1.0
    single = torch.tensor(one, dtype=F32) - pick
    if mult is not None:
        single = single * mult[cls]
    onehot = torch.zeros_like(out_c)
    onehot[idx, cls] = 1
    if eps:
        y_true = (onehot * (1 - eps)).double() + 0.5 * eps
        full = (y_true - out_c.double()).float()
    else:
        full = onehot - out_c
    if mult is not None:
        full[idx, cls] = full[idx, cls] * (mult[cls] * torch.tensor(layer.cls_normalizer, dtype=F32))
    new = torch.where(has.unsqueeze(1), cur, full)
    new[idx[has], cls[has]] = single[has]
    return new, pick


def gaussian_yolo_delta(layer, out: torch.Tensor, truth: torch.Tensor, netw: int, neth: int,
                        adversarial: bool = False):
    """Upstream's l.delta and statistics for one [Gaussian_yolo] layer in training.

    out: (N, A*(9+C), H, W) the layer's training output. truth: (N, T, S>=5) rows x, y, w, h,
    class, ... (a row with x == 0 ends an image's list; upstream walks min(T, max_boxes)
    rows). adversarial: upstream's net.adversarial (only its adversarial-attack command sets
    it). Returns (delta (N, A*(9+C), H, W), GaussianStats).

    The steps follow forward_gaussian_yolo_layer: every cell (objectness, ignored near a
    truth, the cells above truth_thresh), every truth at its best anchors, then
    averages_gaussian_yolo_deltas and the statistics.
    """
    p = _GaussianPass(layer, out, truth, netw, neth)
    g = _CellGrid(p)
    best = _best_truths(p, g)
    d_obj = _objectness_deltas(p, g, best, adversarial)
    _truth_thresh_cells(p, g, best, d_obj)
    _truth_deltas(p)
    # averages_gaussian_yolo_deltas: box deltas divided by the number of positive class deltas
    delta = p.delta
    npos = (delta[:, 9:] > 0).sum(1)
    div = npos > 0
    delta[div, :8] = delta[div, :8] / npos[div].unsqueeze(1).to(F32)
    return _finish(p)


class _GaussianPass:
    """One layer's training pass: its output and delta by cell (flat cell = ((b*a + n)*h + j)*w
    + i), the truth rows upstream walks, anchors, class multipliers and map, the statistics."""

    def __init__(self, layer, out: torch.Tensor, truth: torch.Tensor, netw: int, neth: int):
        self.layer, self.netw, self.neth = layer, netw, neth
        self.n_img = n_img = out.shape[0]
        a, c, h, w = layer.n, layer.classes, layer.out_h, layer.out_w
        self.shape = (n_img, a, 9 + c, h, w)
        self.dev = dev = out.device
        self.out5 = out.detach().float().reshape(self.shape)
        self.cells_out = self.out5.permute(0, 1, 3, 4, 2).reshape(-1, 9 + c)
        self.delta = torch.zeros_like(self.cells_out)
        self.anchors = torch.tensor(layer.anchors, dtype=F32, device=dev).view(-1, 2)
        self.mask_t = torch.tensor(layer.mask, dtype=torch.long, device=dev)
        mult_list = class_multipliers(layer)
        self.mult = torch.tensor(mult_list, dtype=F32, device=dev) if mult_list is not None else None
        self.cmap = class_map(layer)
        self.stats = GaussianStats(cells=w * h * a * n_img)
        self.t_rows = t_rows = min(truth.shape[1], layer.max_boxes)
        self.truth = truth[:, :t_rows].to(dev, F32)
        self.tx = self.truth[:, :, 0]
        self.cls_all = (self.truth[:, :, 4].long() if t_rows
                        else torch.zeros((n_img, 0), dtype=torch.long, device=dev))
        stop = (self.tx == 0) & (self.cls_all < c)
        self.considered = torch.cumprod((~stop).to(torch.int32), 1).bool() & (self.cls_all < c)

    def mapped(self, cls):
        if self.cmap is None:
            return cls
        return torch.tensor([self.cmap[q] for q in cls.tolist()], dtype=torch.long, device=self.dev)

    def cmult(self, cls):
        return self.mult[cls] if self.mult is not None else torch.ones(cls.shape, dtype=F32, device=self.dev)


class _CellGrid:
    """Every cell's image, anchor, row and column, its outputs and its predicted box."""

    def __init__(self, p: _GaussianPass):
        n_img, a, _, h, w = p.shape
        dev, shape = p.dev, (n_img, a, h, w)
        self.bb = torch.arange(n_img, device=dev).view(-1, 1, 1, 1).expand(shape).reshape(-1)
        self.nn = torch.arange(a, device=dev).view(1, -1, 1, 1).expand(shape).reshape(-1)
        self.jj = torch.arange(h, device=dev, dtype=F32).view(1, 1, -1, 1).expand(shape).reshape(-1)
        self.ii = torch.arange(w, device=dev, dtype=F32).view(1, 1, 1, -1).expand(shape).reshape(-1)
        self.anc = p.anchors[p.mask_t[self.nn]]
        self.x8 = p.cells_out[:, :8]
        self.obj = p.cells_out[:, 8]
        self.out_cls = p.cells_out[:, 9:]
        self.pred = gaussian_boxes(self.x8, self.ii, self.jj, self.anc[:, 0], self.anc[:, 1], w, h, p.netw, p.neth,
                                   p.layer.yolo_point)


def _best_truths(p: _GaussianPass, g: _CellGrid):
    """Each cell's best overlapping truth (best_iou, best_t) and the best among cells with a
    confident class (bm_iou, bm_t)."""
    iou = cell_truth_iou(g.pred, p.truth, p.considered, g.bb)  # (cells, T)
    if iou is None:
        zero, first = torch.zeros_like(g.obj), torch.zeros_like(g.nn)
        return zero, first, zero, first
    best_iou, best_t = iou.max(1)
    class_match = (g.out_cls > 0.25).any(1)
    bm_iou, bm_t = torch.where(class_match.unsqueeze(1), iou, torch.zeros_like(iou)).max(1)
    return best_iou, best_t, bm_iou, bm_t


def _objectness_deltas(p: _GaussianPass, g: _CellGrid, best, adversarial: bool) -> torch.Tensor:
    """Every cell's objectness toward 0, ignored (or with objectness_smooth, toward iou^2 with
    the class written) above ignore_thresh; the adversarial variant. Returned, to be stored
    once the truth_thresh cells have written theirs."""
    layer, delta, obj = p.layer, p.delta, g.obj
    _, _, bm_iou, bm_t = best
    p.stats.avg_anyobj = c_fsum(p.out5[:, :, 8].permute(0, 2, 3, 1))  # upstream's order: image, row, column, anchor
    d_obj = layer.obj_normalizer * (0 - obj)
    ign = bm_iou > layer.ignore_thresh
    if layer.objectness_smooth:
        d_obj = torch.where(ign, layer.obj_normalizer * (bm_iou * bm_iou - obj), d_obj)
        if ign.any():
            cls = p.mapped(p.cls_all[g.bb[ign], bm_t[ign]])
            delta[ign, 9:], _ = _class_write(layer, g.out_cls[ign], delta[ign, 9:], cls, p.mult)
    else:
        d_obj = torch.where(ign, torch.zeros_like(d_obj), d_obj)
    if adversarial:
        adv = ~ign
        sc = g.pred[:, 2] * g.pred[:, 3]
        sc = torch.where(sc > 0, torch.sqrt(sc.double()).float(), sc)
        d_obj = torch.where(adv, sc * layer.obj_normalizer * (0 - obj), d_obj)
        hit = adv.unsqueeze(1) & (g.out_cls * obj.unsqueeze(1) > 0.25)
        delta[:, 9:] = torch.where(hit, sc.unsqueeze(1) * (0 - g.out_cls), delta[:, 9:])
    return d_obj


def _truth_thresh_cells(p: _GaussianPass, g: _CellGrid, best, d_obj: torch.Tensor) -> None:
    """The cells whose best truth overlaps above truth_thresh take its objectness, class and
    (accumulated) box deltas; then every cell's objectness delta is stored."""
    layer, delta = p.layer, p.delta
    best_iou, best_t, _, _ = best
    n_img, a, _, h, w = p.shape
    sure = best_iou > layer.truth_thresh
    if sure.any():
        bi = best_iou[sure]
        o = g.obj[sure]
        mult_iou = bi * bi
        d_obj[sure] = layer.obj_normalizer * ((mult_iou if layer.objectness_smooth else 1) - o)
        cls = p.mapped(p.cls_all[g.bb[sure], best_t[sure]])
        new, _ = _class_write(layer, g.out_cls[sure], delta[sure, 9:], cls, p.mult)
        cm = p.cmult(cls)
        if layer.objectness_smooth:
            idx = torch.arange(cls.numel(), device=p.dev)
            new[idx, cls] = cm * (mult_iou - g.out_cls[sure][idx, cls])
        delta[sure, 9:] = new
        rows = p.truth[g.bb[sure], best_t[sure]]
        inc, _ = _box_increment(layer, g.x8[sure], g.ii[sure], g.jj[sure], g.anc[sure, 0], g.anc[sure, 1], w, h,
                                p.netw, p.neth, rows[:, :4], 2 - rows[:, 2] * rows[:, 3], layer.iou_normalizer * cm)
        delta[sure, :8] = delta[sure, :8] + inc
    delta[:, 8] = d_obj


def _truth_cells(p: _GaussianPass, rows):
    """The cell (column, row) of each truth, by yolo_point."""
    _, _, _, h, w = p.shape
    point = p.layer.yolo_point
    if point == "left_top":
        ti = ((rows[:, 0] - rows[:, 2] / 2) * w).clamp(min=0).clamp(max=w - 1).long()
        tj = ((rows[:, 1] - rows[:, 3] / 2) * h).clamp(min=0).clamp(max=h - 1).long()
    elif point == "right_bottom":
        ti = ((rows[:, 0] + rows[:, 2] / 2) * w).clamp(min=0).clamp(max=w - 1).long()
        tj = ((rows[:, 1] + rows[:, 3] / 2) * h).clamp(min=0).clamp(max=h - 1).long()
    else:  # upstream does not clamp here (the loader keeps x, y below 1)
        ti = (rows[:, 0] * w).long().clamp(0, w - 1)
        tj = (rows[:, 1] * h).long().clamp(0, h - 1)
    return ti, tj


def _truth_anchors(p: _GaussianPass, rows):
    """For M truths: (anchor, order within the truth, truth) of every assignment, in
    upstream's order within a truth (best anchor by shape over all `num` first, then with
    iou_thresh < 1 each other anchor matching well enough), and the anchors' mask positions."""
    layer, anchors, dev = p.layer, p.anchors, p.dev
    m, total = rows.shape[0], layer.total
    zeros = torch.zeros((m, total), dtype=F32, device=dev)
    shape_a = torch.stack([zeros, zeros, (anchors[:total, 0] / p.netw).expand(m, total),
                           (anchors[:total, 1] / p.neth).expand(m, total)], -1)
    shape_t = torch.stack([zeros, zeros, rows[:, 2:3].expand(m, total), rows[:, 3:4].expand(m, total)], -1)
    a_iou = box_iou(shape_a, shape_t)
    a_iou = torch.where(torch.isnan(a_iou), torch.zeros_like(a_iou), a_iou)
    best_n = a_iou.max(1).indices
    best_n = torch.where(a_iou.max(1).values > 0, best_n, torch.zeros_like(best_n))
    first = [-1] * total  # int_index(l.mask, n, l.n): the first mask entry equal to n
    for pos, v in reversed(list(enumerate(layer.mask))):
        if v < total:
            first[v] = pos
    in_mask = torch.tensor(first, dtype=torch.long, device=dev)
    pairs = [(best_n, torch.zeros_like(best_n))]
    if layer.iou_thresh < 1.0:
        kind_iou = box_iou_kind(shape_a, shape_t, layer.iou_thresh_kind)
        for q in range(total):
            extra = (best_n != q) & (kind_iou[:, q] > layer.iou_thresh)
            pairs.append((torch.where(extra, torch.full_like(best_n, q), torch.full_like(best_n, -1)),
                          torch.full_like(best_n, q + 1)))
    an = torch.cat([pr[0] for pr in pairs])
    order_in_truth = torch.cat([pr[1] for pr in pairs])
    m_idx = torch.arange(m, device=dev).repeat(len(pairs))
    keep = an >= 0
    keep &= in_mask[an.clamp(min=0)] >= 0
    return an[keep], order_in_truth[keep], m_idx[keep], in_mask


def _truth_deltas(p: _GaussianPass) -> None:
    """Every truth at its anchors' cells (rows with a class >= classes would make upstream
    write past the cell's class entries; the loader never gives one, they are skipped):
    box deltas accumulate, objectness and class overwrite, in rounds of distinct cells."""
    layer, c = p.layer, p.layer.classes
    n_img, a, _, h, w = p.shape
    alive = torch.cumprod((p.tx != 0).to(torch.int32), 1).bool()  # this loop has no class test
    sel = alive & (p.cls_all < c) & (p.cls_all >= 0)
    b_idx, t_idx = sel.nonzero(as_tuple=True)
    if not b_idx.numel():
        return
    rows = p.truth[b_idx, t_idx]
    cls = p.mapped(p.cls_all[b_idx, t_idx])
    ti, tj = _truth_cells(p, rows)
    an, order_in_truth, m_idx, in_mask = _truth_anchors(p, rows)
    if not an.numel():
        return
    key = (b_idx[m_idx] * (p.t_rows + 1) + t_idx[m_idx]) * (layer.total + 2) + order_in_truth
    order = torch.argsort(key)
    an, m_idx = an[order], m_idx[order]
    fc = ((b_idx[m_idx] * a + in_mask[an]) * h + tj[m_idx]) * w + ti[m_idx]
    rank = occurrence_rank(fc)
    for r in range(int(rank.max().item()) + 1):
        s = rank == r
        q = m_idx[s]
        _truth_round(p, fc[s], an[s], rows[q], cls[q], ti[q].float(), tj[q].float())


def _truth_round(p: _GaussianPass, f, anr, tr, cl, ti, tj) -> None:
    """One round of truth assignments to distinct cells f: delta_gaussian_yolo_box
    (accumulating), objectness, delta_gaussian_yolo_class and the statistics."""
    layer, delta, cells_out, stats = p.layer, p.delta, p.cells_out, p.stats
    w, h = p.shape[4], p.shape[3]
    cm = p.cmult(cl)
    inc, ret = _box_increment(layer, cells_out[f, :8], ti, tj, p.anchors[anr, 0], p.anchors[anr, 1], w, h,
                              p.netw, p.neth, tr[:, :4], 2 - tr[:, 2] * tr[:, 3], layer.iou_normalizer * cm)
    delta[f, :8] = delta[f, :8] + inc
    o = cells_out[f, 8]
    stats.avg_obj += float(o.double().sum().item())
    delta[f, 8] = cm * layer.obj_normalizer * (1 - o)
    new, pick = _class_write(layer, cells_out[f, 9:], delta[f, 9:], cl, p.mult)
    delta[f, 9:] = new
    stats.avg_cat += float(pick.double().sum().item())
    stats.count += int(f.numel())
    stats.class_count += int(f.numel())
    stats.recall += int((ret > 0.5).sum().item())
    stats.recall75 += int((ret > 0.75).sum().item())
    stats.avg_iou += float(ret.double().sum().item())


def _finish(p: _GaussianPass):
    """Back to the layer's layout (N, A*(9+C), H, W), and the losses upstream prints."""
    n_img, a, k, h, w = p.shape
    stats = p.stats
    result = p.delta.view(n_img, a, h, w, k).permute(0, 1, 4, 2, 3).reshape(n_img, a * k, h, w).contiguous()
    view = result.view(n_img, a, k, h, w)
    stats.loss = c_mag2(result)
    no_box = view.clone()
    no_box[:, :, :8] = 0
    stats.class_loss = c_mag2(no_box)
    no_wh = view.clone()
    no_wh[:, :, 4:8] = 0
    stats.except_uc_loss = c_mag2(no_wh)
    stats.cost = stats.loss
    return result, stats
