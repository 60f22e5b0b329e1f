"""Upstream: randomize_boxes, correct_boxes, fill_truth_detection, blend_truth,
blend_truth_mosaic (src/data.c).

A truth array is float32 (max_boxes, truth_size): rows x, y, w, h, class, track_id
(relative centre and size), zero rows after the last box. All arithmetic is float32 in
upstream's order of operations, so e.g. w = right - left may differ from the label's w
in the last bit (0.586 -> 0.58599997), exactly as upstream.
"""
from __future__ import annotations

import numpy as np

from .crand import CRandom
from .labels import Labels

F32 = np.float32
# correct_boxes marks a box that lies wholly outside the image with this value.
_OUTSIDE = F32(999999)


def randomize_order(n: int, rng: CRandom) -> np.ndarray:
    """Upstream: randomize_boxes: swap each box i with a random box (not a uniform
    shuffle, but the same one upstream does)."""
    order = np.arange(n)
    for i in range(n):
        j = rng.gen() % n
        order[i], order[j] = order[j], order[i]
    return order


def correct_boxes(labels: Labels, order: np.ndarray, dx, dy, sx, sy, flip: bool) -> np.ndarray:
    """Upstream: correct_boxes: crop/scale/flip the boxes into the augmented image.

    Returns float32 (k, 4) x, y, w, h recomputed from the clamped edges; boxes outside
    the original image get 999999 (fill_truth_detection drops them).
    """
    x, y, w, h = labels.xywh[order].T
    left, right, top, bot = labels.ltrb[order].T
    sx, sy, dx, dy = F32(sx), F32(sy), F32(dx), F32(dy)
    two, one = F32(2), F32(1)
    outside = ((x == 0) & (y == 0)) | (x + w / two < 0) | (y + h / two < 0) \
        | (x - w / two > 1) | (y - h / two > 1)
    left, right = left * sx - dx, right * sx - dx
    top, bot = top * sy - dy, bot * sy - dy
    if flip:
        left, right = one - right, one - left
    left, right, top, bot = (np.clip(v, 0, 1).astype(F32) for v in (left, right, top, bot))
    out = np.stack([(left + right) / two, (top + bot) / two,
                    np.clip(right - left, 0, 1), np.clip(bot - top, 0, 1)], axis=1).astype(F32)
    out[outside] = _OUTSIDE
    return out


def fill_truth_detection(labels: Labels, max_boxes: int, truth_size: int, flip: bool,
                         dx, dy, sx, sy, net_w: int, net_h: int, rng: CRandom):
    """Upstream: fill_truth_detection: (truth float32 (max_boxes, truth_size), min_w_h).

    Boxes are shuffled, corrected, cut to max_boxes, and those smaller than one network
    pixel (w < 1/net_w or h < 1/net_h) are dropped. min_w_h is the smallest side of the
    kept boxes in network pixels (used to limit blur), 0 if none.
    """
    truth = np.zeros((max_boxes, truth_size), dtype=F32)
    if len(labels) == 0:
        return truth, 0
    order = randomize_order(len(labels), rng)
    boxes = correct_boxes(labels, order, dx, dy, sx, sy, flip)[:max_boxes]
    ids, track = labels.ids[order][:max_boxes], labels.track[order][:max_boxes]
    x, y, w, h = boxes.T
    lowest_w, lowest_h = F32(1) / F32(net_w), F32(1) / F32(net_h)
    # Upstream's checks in its order; with labels already validated to (0, 1] only the
    # "smaller than a pixel" test can still fail, the rest is kept for fidelity.
    keep = ~((w < lowest_w) | (h < lowest_h))
    keep &= (x != _OUTSIDE) & (y != _OUTSIDE)
    keep &= (x > 0) & (x <= 1) & (y > 0) & (y <= 1)
    k = int(keep.sum())
    truth[:k, :4] = boxes[keep]
    truth[:k, 4] = ids[keep]
    if truth_size > 5:
        truth[:k, 5] = track[keep]
    return truth, _min_w_h(w[keep], h[keep], net_w, net_h)


def _min_w_h(w: np.ndarray, h: np.ndarray, net_w: int, net_h: int) -> int:
    """fill_truth_detection's min_w_h: an int updated box by box (its first value is
    taken again whenever it is still 0, as upstream)."""
    m = 0
    for wp, hp in zip(w * F32(net_w), h * F32(net_h)):
        if m == 0:
            m = int(wp)
        if m > wp:
            m = int(wp)
        if m > hp:
            m = int(hp)
    return m


def count_boxes(truth: np.ndarray) -> int:
    """Rows before the first one whose x is 0 (upstream's end-of-list marker)."""
    zero = np.flatnonzero(truth[:, 0] == 0)
    return int(zero[0]) if len(zero) else len(truth)


def blend_truth(acc: np.ndarray, new: np.ndarray) -> None:
    """Upstream: blend_truth (OpenCV build): append `new`'s boxes after `acc`'s, in place,
    as many as fit. Only x, y, w, h, class are copied: appended rows keep track_id 0."""
    start, k = count_boxes(acc), count_boxes(new)
    k = min(k, len(acc) - start)
    acc[start:start + k, :5] = new[:k, :5]


def blend_truth_mosaic(acc: np.ndarray, piece: np.ndarray, w: int, h: int, cut_x: int, cut_y: int,
                       i_mixup: int, shifts: tuple[int, int, int, int], mosaic_bound: bool) -> None:
    """Upstream: blend_truth_mosaic: move one mosaic piece's boxes into the mosaic and
    append those still inside it to `acc`, in place (track_id stays 0).

    shifts: (left, right, top, bot) offsets of the piece's visible part.
    """
    start = count_boxes(acc)
    k = min(count_boxes(piece), len(acc) - start)
    if k <= 0:
        return
    xb, yb, wb, hb = (c.copy() for c in piece[:k, :4].T)
    left_shift, right_shift, top_shift, bot_shift = shifts
    fw, fh = F32(w), F32(h)
    right_piece, bottom_piece = i_mixup in (1, 3), i_mixup in (2, 3)
    xb = xb + F32(cut_x - left_shift) / fw if right_piece else xb - F32(w - cut_x - right_shift) / fw
    yb = yb + F32(cut_y - top_shift) / fh if bottom_piece else yb - F32(h - cut_y - bot_shift) / fh
    left, right, top, bot = _edges(xb, yb, wb, hb, w, h)
    if mosaic_bound:
        # Clip each box to its own quadrant of the mosaic.
        lb, rb = (cut_x, w) if right_piece else (0, cut_x)
        tb, bb = (cut_y, h) if bottom_piece else (0, cut_y)
        left, right = np.maximum(left, lb), np.minimum(right, rb)
        top, bot = np.maximum(top, tb), np.minimum(bot, bb)
        xb = ((right + left).astype(F32) / F32(2)) / fw
        wb = (right - left).astype(F32) / fw
        yb = ((bot + top).astype(F32) / F32(2)) / fh
        hb = (bot - top).astype(F32) / fh
    else:
        xb, wb = _clip_axis(xb, wb, left, right, w)
        yb, hb = _clip_axis(yb, hb, top, bot, h)
        left, right, top, bot = _edges(xb, yb, wb, hb, w, h)
    lowest_w, lowest_h = F32(1) / fw, F32(1) / fh
    inside = (left >= 0) & (right <= w) & (top >= 0) & (bot <= h) \
        & (wb > 0) & (wb < 1) & (hb > 0) & (hb < 1) & (xb > 0) & (xb < 1) & (yb > 0) & (yb < 1) \
        & (wb > lowest_w) & (hb > lowest_h)
    n = int(inside.sum())
    acc[start:start + n, :4] = np.stack([xb, yb, wb, hb], axis=1)[inside]
    acc[start:start + n, 4] = piece[:k, 4][inside]


def _edges(xb, yb, wb, hb, w: int, h: int):
    """Box edges in mosaic pixels, truncated toward zero as upstream's int casts."""
    two = F32(2)
    return (((xb - wb / two) * F32(w)).astype(np.int64), ((xb + wb / two) * F32(w)).astype(np.int64),
            ((yb - hb / two) * F32(h)).astype(np.int64), ((yb + hb / two) * F32(h)).astype(np.int64))


def _clip_axis(c, size, lo_edge, hi_edge, n: int):
    """blend_truth_mosaic without mosaic_bound: shrink a box that crosses the mosaic's
    border along one axis, keeping its inner edge where it was."""
    fn, two = F32(n), F32(2)
    diff = lo_edge.astype(F32) / fn
    low = lo_edge < 0
    c = np.where(low, c - diff / two, c).astype(F32)
    size = np.where(low, size + diff, size).astype(F32)
    diff = (hi_edge - n).astype(F32) / fn
    high = hi_edge > n
    c = np.where(high, c - diff / two, c).astype(F32)
    size = np.where(high, size - diff, size).astype(F32)
    return c, size
