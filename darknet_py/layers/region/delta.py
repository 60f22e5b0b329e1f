"""Upstream: forward_region_layer's training part, get_region_box, delta_region_box,
delta_region_class and backward_region_layer (src/region_layer.c); get_hierarchy_probability
and read_tree's group tables (src/tree.c).

Pure function of a [region] layer's training output (our Region.forward: upstream's
*flattened* l.output, each cell's n*(coords+1+classes) values contiguous), the truth array and
net.seen. It returns upstream's l.delta after its final un-flatten, i.e. in the layout of the
region layer's INPUT (N, n*(coords+1+classes), h, w), plus the numbers upstream prints and
sums as the layer cost.

What the delta means: backward_region_layer adds l.delta unchanged to the previous layer's
delta, and l.delta already is (minus) a gradient with respect to the region layer's input:
x, y carry the logistic's derivative (delta_region_box multiplies by logistic_gradient), the
objectness too, w and h are raw, and the class entries are target minus softmax output, the
softmax cross-entropy gradient on the logits (with softmax=0 they are plain target minus raw
value). So the training loop's surrogate -sum(delta * input) gives the previous layer exactly
the delta upstream gives it.

Every upstream write here is an overwrite whose value depends only on the output and the
truth, so a cell hit by several truths ends with the last writer's values (for each entry:
with a softmax tree different truths write different groups). The truth writes are applied
in rounds (round r holds the r-th assignment of every cell), keeping upstream's order.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...box import box_iou
from ..delta_common import c_div, c_fsum, c_mag2, cell_truth_iou, class_map, occurrence_rank

SEEN_PRIOR = 12800  # upstream pulls every box towards its anchor while net.seen < 12800
ONLYCLASS = 100000  # a truth with x and y above this only trains the classes (softmax tree)


@dataclass
class RegionStats:
    """What forward_region_layer accumulates and prints for one mini-batch."""

    avg_iou: float = 0.0
    recall: float = 0.0
    avg_cat: float = 0.0
    avg_obj: float = 0.0
    avg_anyobj: float = 0.0
    count: int = 0
    class_count: int = 0
    cells: int = 1  # l.w*l.h*l.n*l.batch
    cost: float = 0.0  # pow(mag_array(l.delta), 2)
    total_bbox: int = 0  # the region layer does not count these (yolo layers do)
    rewritten_bbox: int = 0

    def line(self, layer=None, batch: int | None = None) -> str:
        """Upstream's printf line (it goes to stdout upstream)."""
        return (f"Region Avg IOU: {c_div(self.avg_iou, self.count)}, Class: {c_div(self.avg_cat, self.class_count)}, "
                f"Obj: {c_div(self.avg_obj, self.count)}, No Obj: {c_div(self.avg_anyobj, self.cells)}, "
                f"Avg Recall: {c_div(self.recall, self.count)},  count: {self.count}")


class _Tree:
    """read_tree's tables from the layer's SoftmaxTree: parent, group of each node, group offsets."""

    def __init__(self, tree, classes: int, device):
        sizes = tree.sizes()
        parents = list(tree.parents)
        offsets, o = [], 0
        for s in sizes:
            offsets.append(o)
            o += s
        group = [0] * len(parents)
        for g, (off, s) in enumerate(zip(offsets, sizes)):
            for c in range(off, off + s):
                group[c] = g
        n = len(parents)
        depth = 0
        chains = []
        for c in range(n):
            chain, k = [], c
            while k >= 0 and len(chain) <= n:
                chain.append(k)
                k = parents[k]
            chains.append(chain)
            depth = max(depth, len(chain))
        self.path = torch.full((n, depth), -1, dtype=torch.long)  # node, parent, grandparent, ...
        for c, chain in enumerate(chains):
            self.path[c, :len(chain)] = torch.tensor(chain)
        self.path = self.path.to(device)
        width = max(classes, n)
        entry_group = torch.full((width,), -1, dtype=torch.long)
        entry_group[:n] = torch.tensor(group, dtype=torch.long)
        self.entry_group = entry_group.to(device)
        self.group = torch.tensor(group + [-2], dtype=torch.long, device=device)  # [-1] -> -2: no group
        self.width = width

    def targets(self, cls: torch.Tensor):
        """(written, target, path) for M classes: which of the first `width` class entries
        delta_region_class writes, their target (1 on the path from the class to the root, else
        0), and the path itself (M, depth; -1 past the root)."""
        path = self.path[cls]  # (M, D)
        groups = self.group[path]  # -2 where the path ended
        written = (self.entry_group.view(1, 1, -1) == groups.unsqueeze(-1)).any(1)
        ent = torch.arange(self.width, device=cls.device).view(1, 1, -1)
        target = (ent == path.unsqueeze(-1)).any(1)
        return written, target, path


def _path_product(out_c: torch.Tensor, path: torch.Tensor) -> torch.Tensor:
    """get_hierarchy_probability: the product of the outputs along each path, leaf first."""
    p = torch.ones_like(out_c[:, 0])
    for d in range(path.shape[1]):
        node = path[:, d]
        v = out_c.gather(1, node.clamp(0, out_c.shape[1] - 1).view(-1, 1)).squeeze(1)
        p = torch.where(node >= 0, p * v, p)
    return p


def _class_write(layer, tree, out_c, cur, cls, scale):
    """upstream delta_region_class for M distinct cells: the new class deltas and avg_cat's terms.

    out_c, cur: (M, classes) outputs and current deltas; cls: (M,); scale: (M,)."""
    m, c = out_c.shape
    idx = torch.arange(m, device=out_c.device)
    if tree is not None:
        written, target, path = tree.targets(cls)
        written, target = written[:, :c], target[:, :c]
        val = scale.unsqueeze(1) * (target.to(out_c.dtype) - out_c)
        new = torch.where(written, val, cur)
        cat = _path_product(out_c, path)
        return new, cat
    onehot = torch.zeros_like(out_c)
    onehot[idx, cls] = 1
    new = scale.unsqueeze(1) * (onehot - out_c)
    pick = out_c[idx, cls]
    if layer.focal_loss:
        pt = pick + torch.tensor(1e-15, dtype=out_c.dtype)
        grad = -(1 - pt) * (2 * pt * torch.log(pt) + pt - 1)
        new = new * (0.5 * grad).unsqueeze(1)
    return new, pick


def _region_boxes(x4, i, j, aw, ah, lw, lh):
    """get_region_box (DOABS form) for M cells: x4 the raw (M, 4) outputs."""
    bx = (i + torch.sigmoid(x4[:, 0])) / lw
    by = (j + torch.sigmoid(x4[:, 1])) / lh
    bw = (torch.exp(x4[:, 2].double()) * aw.double() / lw).float()
    bh = (torch.exp(x4[:, 3].double()) * ah.double() / lh).float()
    return torch.stack([bx, by, bw, bh], 1)


def _box_write(x4, i, j, aw, ah, lw, lh, truth4, scale):
    """delta_region_box's four (overwriting) values and its returned IoU for M cells."""
    pred = _region_boxes(x4, i, j, aw, ah, lw, lh)
    iou = box_iou(pred, truth4)
    tx = truth4[:, 0] * lw - i
    ty = truth4[:, 1] * lh - j
    tw = torch.log(((truth4[:, 2] * lw) / aw).double()).float()
    th = torch.log(((truth4[:, 3] * lh) / ah).double()).float()
    sx, sy = torch.sigmoid(x4[:, 0]), torch.sigmoid(x4[:, 1])
    d = torch.stack([scale * (tx - sx) * ((1 - sx) * sx), scale * (ty - sy) * ((1 - sy) * sy),
                     scale * (tw - x4[:, 2]), scale * (th - x4[:, 3])], 1)
    return d, iou


def region_delta(layer, out: torch.Tensor, truth: torch.Tensor, seen: int):
    """Upstream's l.delta (un-flattened: the delta w.r.t. the layer's input) and statistics for
    one [region] layer in training.

    out: (N, n*(coords+1+classes), h, w) Region.forward's output (upstream's flattened
    l.output). truth: (N, T, S>=5) rows x, y, w, h, class, ... (upstream walks
    min(T, max_boxes) rows per image). seen: net.seen, already increased by this mini-batch
    as upstream does before the forward. Returns (delta like the layer's input, RegionStats).

    The steps follow forward_region_layer: the softmax tree's class-only truths, every cell
    (objectness, classfix, the anchor prior early in training), every truth at its best
    anchor, then the final flatten back to the input's layout.
    """
    p = _RegionPass(layer, out, truth)
    onlyclass = _onlyclass_truths(p)
    _cell_deltas(p, ~onlyclass, seen)
    _truth_deltas(p, ~onlyclass)
    # upstream's final flatten(..., 0): back to the input's (n*size, h*w) planes
    n_img, h, w, a, size = p.shape
    result = p.delta.view(n_img, h, w, a, size).permute(0, 3, 4, 1, 2).reshape(n_img, a * size, h, w).contiguous()
    p.stats.cost = c_mag2(result)
    return result, p.stats


class _RegionPass:
    """One layer's training pass: its output and delta by cell (flat cell = ((b*h + j)*w +
    i)*a + n, as upstream's index/size), anchors, softmax tree, class map, the truth rows
    upstream walks and the statistics."""

    def __init__(self, layer, out: torch.Tensor, truth: torch.Tensor):
        self.layer = layer
        self.n_img = n_img = out.shape[0]
        a, c, h, w = layer.n, layer.classes, layer.out_h, layer.out_w
        size = layer.coords + c + 1
        self.shape = (n_img, h, w, a, size)
        self.dev = dev = out.device
        self.o5 = out.detach().float().reshape(self.shape)
        self.cells_out = self.o5.reshape(-1, size)
        self.delta = torch.zeros_like(self.cells_out)
        self.anchors = torch.tensor(layer.anchors[:2 * a], dtype=torch.float32, device=dev).view(a, 2)
        self.tree = _Tree(layer.softmax_tree, c, dev) if layer.softmax_tree is not None else None
        self.cmap = class_map(layer)
        self.stats = RegionStats(cells=w * h * a * n_img)
        self.t_rows = t_rows = min(truth.shape[1], layer.max_boxes)
        self.truth = truth[:, :t_rows].to(dev, torch.float32)
        self.tx = self.truth[:, :, 0]
        self.cls_all = (self.truth[:, :, 4].long() if t_rows
                        else torch.zeros((n_img, 0), dtype=torch.long, device=dev))
        # loops that test the class first (continue) and then x == 0 (break)
        stop = (self.tx == 0) & (self.cls_all < c)
        alive = torch.cumprod((~stop).to(torch.int32), 1).bool()
        self.considered = alive & (self.cls_all < c)

    def write_classes(self, flat, k, scale) -> None:
        """delta_region_class at the distinct cells `flat` for classes k; avg_cat and class_count."""
        c = self.layer.classes
        new, cat = _class_write(self.layer, self.tree, self.cells_out[flat, 5:5 + c], self.delta[flat, 5:5 + c],
                                k, scale)
        self.delta[flat, 5:5 + c] = new
        self.stats.avg_cat += float(cat.double().sum().item())
        self.stats.class_count += int(flat.numel())


def _onlyclass_truths(p: _RegionPass) -> torch.Tensor:
    """Softmax tree: an image whose first truths include an "only class" one trains only that
    class, at the cell and anchor most confident of it. Returns which images did (N,)."""
    n_img, h, w, a, size = p.shape
    tree, layer, dev = p.tree, p.layer, p.dev
    onlyclass = torch.zeros(n_img, dtype=torch.bool, device=dev)
    if tree is None or not p.t_rows:
        return onlyclass
    alive_x = torch.cumprod((p.tx != 0).to(torch.int32), 1).bool()
    oc = alive_x & (p.tx > ONLYCLASS) & (p.truth[:, :, 1] > ONLYCLASS)
    onlyclass = oc.any(1)
    for b in onlyclass.nonzero().flatten().tolist():
        t = int(oc[b].nonzero()[0].item())
        k = int(p.cls_all[b, t].item())
        img = p.o5[b].reshape(-1, size)  # (h*w*a, size) in upstream's n order
        path = tree.path[k].view(1, -1).expand(img.shape[0], -1)
        prob = img[:, 4] * _path_product(img[:, 5:5 + layer.classes], path)
        best = int(torch.argmax(prob).item()) if bool((prob > 0).any()) else 0
        flat = b * h * w * a + best
        p.write_classes(torch.tensor([flat], device=dev), torch.tensor([k], device=dev),
                        torch.tensor([layer.class_scale], device=dev))
    return onlyclass


def _cell_deltas(p: _RegionPass, keep: torch.Tensor, seen: int) -> None:
    """Every cell of the images trained normally (keep): the no-object delta (none near a
    truth, or with classfix the truth's class), and while seen < SEEN_PRIOR the pull of every
    box toward its anchor."""
    n_img, h, w, a, size = p.shape
    layer, dev, delta = p.layer, p.dev, p.delta
    grid = (n_img, h, w, a)
    jj = torch.arange(h, device=dev, dtype=torch.float32).view(1, h, 1, 1).expand(grid).reshape(-1)
    ii = torch.arange(w, device=dev, dtype=torch.float32).view(1, 1, w, 1).expand(grid).reshape(-1)
    nn_ = torch.arange(a, device=dev).view(1, 1, 1, a).expand(grid).reshape(-1)
    bb = torch.arange(n_img, device=dev).view(n_img, 1, 1, 1).expand(grid).reshape(-1)
    live = keep[bb]
    x4 = p.cells_out[:, :4]
    obj = p.cells_out[:, 4]
    pred = _region_boxes(x4, ii, jj, p.anchors[nn_, 0], p.anchors[nn_, 1], w, h)
    best_iou, best_t = _best_truths(p, pred, bb, obj, nn_)
    grad = (1 - obj) * obj
    d_obj = layer.noobject_scale * ((0 - obj) * grad)
    if layer.classfix == -1:
        d_obj = layer.noobject_scale * ((best_iou - obj) * grad)
    else:
        near = best_iou > layer.thresh
        d_obj = torch.where(near, torch.zeros_like(d_obj), d_obj)
        sel = near & live
        if layer.classfix > 0 and sel.any():
            sc = torch.full_like(obj[sel], layer.class_scale)
            if layer.classfix == 2:
                sc = sc * obj[sel]
            p.write_classes(sel.nonzero().flatten(), p.cls_all[bb[sel], best_t[sel]], sc)
    delta[:, 4] = torch.where(live, d_obj, delta[:, 4])
    p.stats.avg_anyobj = c_fsum(obj[live])  # cells in upstream's order: image, row, column, anchor
    if seen < SEEN_PRIOR:
        prior = torch.stack([(ii + 0.5) / w, (jj + 0.5) / h, p.anchors[nn_, 0] / w, p.anchors[nn_, 1] / h], 1)
        d, _ = _box_write(x4, ii, jj, p.anchors[nn_, 0], p.anchors[nn_, 1], w, h, prior,
                          torch.full_like(obj, 0.01))
        delta[:, :4] = torch.where(live.unsqueeze(1), d, delta[:, :4])


def _best_truths(p: _RegionPass, pred, bb, obj, nn_):
    """Each cell's best overlapping truth (best_iou, best_t)."""
    iou = cell_truth_iou(pred, p.truth, p.considered, bb)  # (cells, T)
    if iou is None:
        return torch.zeros_like(obj), torch.zeros_like(nn_)
    return iou.max(1)


def _truth_anchor_cells(p: _RegionPass, b_idx, rows, ti, tj):
    """For M truths: the flat cell of the best anchor (by shape: the anchor's, with
    bias_match, else the predicted box's) at the truth's cell, and that anchor."""
    n_img, h, w, a, size = p.shape
    anchors, x4 = p.anchors, p.cells_out[:, :4]
    m = rows.shape[0]
    cand = ((b_idx * h + tj) * w + ti).unsqueeze(1) * a + torch.arange(a, device=p.dev)  # (M, a)
    if p.layer.bias_match:
        sw = anchors[:, 0].view(1, a).expand(m, a) / w
        sh = anchors[:, 1].view(1, a).expand(m, a) / h
    else:
        pb = _region_boxes(x4[cand.reshape(-1)], ti.repeat_interleave(a).float(), tj.repeat_interleave(a).float(),
                           anchors[:, 0].repeat(m), anchors[:, 1].repeat(m), w, h).view(m, a, 4)
        sw, sh = pb[..., 2], pb[..., 3]
    zeros = torch.zeros_like(sw)
    shape_iou = box_iou(torch.stack([zeros, zeros, sw, sh], -1),
                        torch.stack([zeros, zeros, rows[:, 2:3].expand(m, a), rows[:, 3:4].expand(m, a)], -1))
    shape_iou = torch.where(torch.isnan(shape_iou), torch.zeros_like(shape_iou), shape_iou)
    top, best_n = shape_iou.max(1)
    found = top > 0
    best_n = torch.where(found, best_n, torch.zeros_like(best_n))
    flat = torch.where(found, cand.gather(1, best_n.view(-1, 1)).squeeze(1), torch.zeros_like(ti))  # index 0
    return flat, best_n


def _truth_deltas(p: _RegionPass, keep: torch.Tensor) -> None:
    """Every truth: its cell's best anchor gets box, objectness and class deltas (overwrites:
    a cell hit by several truths keeps the last writer's, so they go in rounds)."""
    n_img, h, w, a, size = p.shape
    layer, delta, cells_out, stats = p.layer, p.delta, p.cells_out, p.stats
    sel = p.considered & keep.view(-1, 1)
    b_idx, t_idx = sel.nonzero(as_tuple=True)  # in upstream's order: image, then truth
    if not b_idx.numel():
        return
    rows = p.truth[b_idx, t_idx]
    cls = p.cls_all[b_idx, t_idx]
    if p.cmap is not None:
        cls = torch.tensor([p.cmap[k] for k in cls.tolist()], dtype=torch.long, device=p.dev)
    ti = (rows[:, 0] * w).long().clamp(0, w - 1)  # upstream does not clamp (x < 1 from the loader)
    tj = (rows[:, 1] * h).long().clamp(0, h - 1)
    flat, best_n = _truth_anchor_cells(p, b_idx, rows, ti, tj)
    rank = occurrence_rank(flat)
    for r in range(int(rank.max().item()) + 1):
        s = rank == r
        fc = flat[s]
        bn = best_n[s]
        d, iou = _box_write(cells_out[fc, :4], ti[s].float(), tj[s].float(), p.anchors[bn, 0], p.anchors[bn, 1],
                            w, h, rows[s, :4], torch.full_like(rows[s, 0], layer.coord_scale))
        delta[fc, :4] = d
        stats.recall += int((iou > 0.5).sum().item())
        stats.avg_iou += float(iou.double().sum().item())
        o = cells_out[fc, 4]
        stats.avg_obj += float(o.double().sum().item())
        target = iou if layer.rescore else torch.ones_like(o)
        delta[fc, 4] = layer.object_scale * (target - o) * ((1 - o) * o)
        p.write_classes(fc, cls[s], torch.full_like(o, layer.class_scale))
        stats.count += int(fc.numel())
