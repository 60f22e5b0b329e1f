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

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...box import box_iou

SEEN_PRIOR = 12800  # upstream pulls every box towards its anchor while net.seen < 12800
ONLYCLASS = 100000  # a truth with x and y above this only trains the classes (softmax tree)


def c_div(a: float, b: float) -> str:
    """printf("%f", a/b) for float division as upstream's x86 build prints it ("-nan" for 0/0)."""
    if b == 0:
        if a == 0 or a != a:
            return "-nan"
        return "inf" if a > 0 else "-inf"
    return f"{a / b:f}"


def c_mag2(t: torch.Tensor) -> float:
    """pow(mag_array(a, n), 2) as upstream computes it: float squares summed in order in a float,
    the square root and the square taken in double and stored to float."""
    sq = t.detach().reshape(-1).float().cpu().numpy()
    sq = sq * sq
    total = np.float32(np.cumsum(sq, dtype=np.float32)[-1]) if sq.size else np.float32(0)
    mag = np.float32(math.sqrt(float(total)))
    return float(np.float32(float(mag) ** 2))


def c_fsum(t: torch.Tensor) -> float:
    """A float accumulator's value after adding t's values in order (upstream's `float sum += x`)."""
    v = t.detach().reshape(-1).float().cpu().numpy()
    return float(np.cumsum(v, dtype=np.float32)[-1]) if v.size else 0.0


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


_MAPS: dict[str, list[int]] = {}


def class_map(layer) -> list[int] | None:
    """Upstream's read_map of the layer's map=FILE: one integer (atoi) per line."""
    name = getattr(layer, "map", None)
    if not name:
        return None
    if name not in _MAPS:
        lines = Path(name).read_text(encoding="latin-1").split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the text after the final newline is no line
        values = []
        for line in lines:
            m = re.match(r"\s*([+-]?\d+)", line)
            values.append(int(m.group(1)) if m else 0)
        _MAPS[name] = values
    return _MAPS[name]


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


def occurrence_rank(keys: torch.Tensor) -> torch.Tensor:
    """For each position, how many earlier positions hold the same key."""
    if keys.numel() == 0:
        return keys.clone()
    order = torch.sort(keys, stable=True).indices
    sk = keys[order]
    pos = torch.arange(keys.numel(), device=keys.device)
    start = torch.ones_like(sk, dtype=torch.bool)
    start[1:] = sk[1:] != sk[:-1]
    first = torch.cummax(torch.where(start, pos, torch.zeros_like(pos)), 0).values
    rank = torch.empty_like(pos)
    rank[order] = pos - first
    return rank


def region_delta(layer, out: torch.Tensor, truth: torch.Tensor, seen: int):
    """Upstream's l.delta (un-flattened: the delta w.r.t. the layer's input) and statistics for
    one [region] layer in training.

    out: (N, n*(coords+1+classes), h, w) Region.forward's output (upstream's flattened
    l.output). truth: (N, T, S>=5) rows x, y, w, h, class, ... (upstream walks
    min(T, max_boxes) rows per image). seen: net.seen, already increased by this mini-batch
    as upstream does before the forward. Returns (delta like the layer's input, RegionStats).
    """
    n_img = out.shape[0]
    a, c, h, w = layer.n, layer.classes, layer.out_h, layer.out_w
    size = layer.coords + c + 1
    dev = out.device
    o5 = out.detach().float().reshape(n_img, h, w, a, size)
    cells_out = o5.reshape(-1, size)  # flat cell = ((b*h + j)*w + i)*a + n, as upstream's index/size
    delta = torch.zeros_like(cells_out)
    anchors = torch.tensor(layer.anchors[:2 * a], dtype=torch.float32, device=dev).view(a, 2)
    tree = _Tree(layer.softmax_tree, c, dev) if layer.softmax_tree is not None else None
    cmap = class_map(layer)
    stats = RegionStats(cells=w * h * a * n_img)

    t_rows = min(truth.shape[1], layer.max_boxes)
    truth = truth[:, :t_rows].to(dev, torch.float32)
    tx = truth[:, :, 0]
    cls_all = truth[:, :, 4].long() if t_rows else torch.zeros((n_img, 0), dtype=torch.long, device=dev)
    # loops that test the class first (continue) and then x == 0 (break)
    stop = (tx == 0) & (cls_all < c)
    alive = torch.cumprod((~stop).to(torch.int32), 1).bool()
    considered = alive & (cls_all < c)

    # softmax tree: an image whose first truths include an "only class" one trains only that
    onlyclass = torch.zeros(n_img, dtype=torch.bool, device=dev)
    if tree is not None and t_rows:
        alive_x = torch.cumprod((tx != 0).to(torch.int32), 1).bool()
        oc = alive_x & (tx > ONLYCLASS) & (truth[:, :, 1] > ONLYCLASS)
        onlyclass = oc.any(1)
        for b in onlyclass.nonzero().flatten().tolist():
            t = int(oc[b].nonzero()[0].item())
            k = int(cls_all[b, t].item())
            img = o5[b].reshape(-1, size)  # (h*w*a, size) in upstream's n order
            path = tree.path[k].view(1, -1).expand(img.shape[0], -1)
            p = img[:, 4] * _path_product(img[:, 5:5 + c], path)
            best = int(torch.argmax(p).item()) if bool((p > 0).any()) else 0
            flat = b * h * w * a + best
            new, cat = _class_write(layer, tree, cells_out[flat:flat + 1, 5:5 + c], delta[flat:flat + 1, 5:5 + c],
                                    torch.tensor([k], device=dev), torch.tensor([layer.class_scale], device=dev))
            delta[flat:flat + 1, 5:5 + c] = new
            stats.avg_cat += float(cat.sum().item())
            stats.class_count += 1

    # every cell: no-object delta (or none / rescaled near a truth), and the anchor prior
    keep = ~onlyclass  # images that are trained normally
    jj = torch.arange(h, device=dev, dtype=torch.float32).view(1, h, 1, 1).expand(n_img, h, w, a).reshape(-1)
    ii = torch.arange(w, device=dev, dtype=torch.float32).view(1, 1, w, 1).expand(n_img, h, w, a).reshape(-1)
    nn_ = torch.arange(a, device=dev).view(1, 1, 1, a).expand(n_img, h, w, a).reshape(-1)
    bb = torch.arange(n_img, device=dev).view(n_img, 1, 1, 1).expand(n_img, h, w, a).reshape(-1)
    live = keep[bb]
    x4 = cells_out[:, :4]
    obj = cells_out[:, 4]
    pred = _region_boxes(x4, ii, jj, anchors[nn_, 0], anchors[nn_, 1], w, h)
    t_eff = int(considered.any(0).nonzero().max().item()) + 1 if bool(considered.any()) else 0
    if t_eff:  # rows past the last one any image uses cannot matter
        iou = box_iou(pred.view(n_img, -1, 1, 4), truth[:, None, :t_eff, :4]).reshape(-1, t_eff)  # (cells, T)
        iou = torch.where(considered[bb, :t_eff] & ~torch.isnan(iou), iou, torch.zeros_like(iou))
        best_iou, best_t = iou.max(1)
    else:
        best_iou = torch.zeros_like(obj)
        best_t = torch.zeros_like(nn_)
    grad = (1 - obj) * obj
    d_obj = layer.noobject_scale * ((0 - obj) * grad)
    if layer.classfix == -1:
        d_obj = layer.noobject_scale * ((best_iou - obj) * grad)
    else:
        near = best_iou > layer.thresh
        d_obj = torch.where(near, torch.zeros_like(d_obj), d_obj)
        if layer.classfix > 0:
            sel = near & live
            if sel.any():
                k = cls_all[bb[sel], best_t[sel]]
                sc = torch.full_like(obj[sel], layer.class_scale)
                if layer.classfix == 2:
                    sc = sc * obj[sel]
                new, cat = _class_write(layer, tree, cells_out[sel, 5:5 + c], delta[sel, 5:5 + c], k, sc)
                delta[sel, 5:5 + c] = new
                stats.avg_cat += float(cat.double().sum().item())
                stats.class_count += int(sel.sum().item())
    delta[:, 4] = torch.where(live, d_obj, delta[:, 4])
    stats.avg_anyobj = c_fsum(obj[live])  # cells in upstream's order: image, row, column, anchor
    if seen < SEEN_PRIOR:
        prior = torch.stack([(ii + 0.5) / w, (jj + 0.5) / h, anchors[nn_, 0] / w, anchors[nn_, 1] / h], 1)
        d, _ = _box_write(x4, ii, jj, anchors[nn_, 0], anchors[nn_, 1], w, h, prior,
                          torch.full_like(obj, 0.01))
        delta[:, :4] = torch.where(live.unsqueeze(1), d, delta[:, :4])

    # every truth: its cell's best anchor (by shape) gets box, objectness and class deltas
    sel = considered & keep.view(-1, 1)
    b_idx, t_idx = sel.nonzero(as_tuple=True)  # in upstream's order: image, then truth
    if b_idx.numel():
        rows = truth[b_idx, t_idx]
        cls = cls_all[b_idx, t_idx]
        if cmap is not None:
            cls = torch.tensor([cmap[k] for k in cls.tolist()], dtype=torch.long, device=dev)
        ti = (rows[:, 0] * w).long().clamp(0, w - 1)  # upstream does not clamp (x < 1 from the loader)
        tj = (rows[:, 1] * h).long().clamp(0, h - 1)
        m = rows.shape[0]
        cand = ((b_idx * h + tj) * w + ti).unsqueeze(1) * a + torch.arange(a, device=dev)  # (M, a)
        if layer.bias_match:
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
        rank = occurrence_rank(flat)
        for r in range(int(rank.max().item()) + 1):
            s = rank == r
            fc = flat[s]
            bn = best_n[s]
            d, iou = _box_write(cells_out[fc, :4], ti[s].float(), tj[s].float(), anchors[bn, 0], anchors[bn, 1], w, h,
                                rows[s, :4], torch.full_like(rows[s, 0], layer.coord_scale))
            delta[fc, :4] = d
            stats.recall += int((iou > 0.5).sum().item())
            stats.avg_iou += float(iou.double().sum().item())
            o = cells_out[fc, 4]
            stats.avg_obj += float(o.double().sum().item())
            target = iou if layer.rescore else torch.ones_like(o)
            delta[fc, 4] = layer.object_scale * (target - o) * ((1 - o) * o)
            new, cat = _class_write(layer, tree, cells_out[fc, 5:5 + c], delta[fc, 5:5 + c], cls[s],
                                    torch.full_like(o, layer.class_scale))
            delta[fc, 5:5 + c] = new
            stats.avg_cat += float(cat.double().sum().item())
            stats.count += int(fc.numel())
            stats.class_count += int(fc.numel())

    # upstream's final flatten(..., 0): back to the input's (n*size, h*w) planes
    result = delta.view(n_img, h, w, a, size).permute(0, 3, 4, 1, 2).reshape(n_img, a * size, h, w).contiguous()
    stats.cost = c_mag2(result)
    return result, stats
