"""Which detections float32 rounding may decide: upstream's NMS in three-valued logic.

Upstream's kept set is a chain of float32 decisions: `prob > thresh`, the order of two probs
in the per-class sort, `overlap > nms`. Two float32 forwards that differ only in summation
order (upstream's and ours, or our two CPU paths) agree on every decision that has a margin
and may disagree on one that has none. So a detection comparison is made against intervals:

- every quantity a decision reads (class prob, objectness, box x, y, w, h) is known to lie
  within a measured distance of the float64 forward of the same network: `Bounds.measure`
  takes the largest deviation of each float32 engine from it (probs and objectness and w, h
  relative, x and y absolute, over the boxes that can matter);
- `nms_three_valued` runs upstream's NMS (do_nms_sort / diounms_sort) with every decision
  True, False or Maybe under those intervals (interval arithmetic for the overlap metrics,
  widened by float32's own rounding of the box edges, which alone undecides boxes narrower
  than a few ulps of their centre) and returns, per box and class, whether it is certainly
  kept, certainly not, or either;
- `check_detections` then holds an engine's printed list to it: every certainly kept box and
  class present, nothing certainly dropped present.

The logic is Kleene's: the fixpoint is taken from "all unknown", which is sound (every
concrete run's outcome refines it), and it is exact when no decision is within its bound.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from darknet_py.outputs.detections import Detections, _nms_kind

EPS32 = float(np.finfo(np.float32).eps)


@dataclass
class Bounds:
    """Largest deviation of any float32 engine from the float64 forward."""
    prob: float  # relative, class probs with p64 > thresh/2
    obj: float   # relative, objectness with obj64 > thresh/2
    xy: float    # absolute, box centres of those boxes
    wh: float    # relative, box sizes of those boxes

    @classmethod
    def measure(cls, ref: Detections, engines: dict[str, Detections], thresh: float) -> dict[str, "Bounds"]:
        """One Bounds per engine; all Detections index-aligned (every box, unthresholded)."""
        p64 = ref.probs.astype(np.float64)
        o64 = ref.objectness.astype(np.float64)
        b64 = ref.boxes.astype(np.float64)
        pm = p64 > thresh / 2
        om = o64 > thresh / 2
        boxes = pm.any(1) & om

        def rel(a, b, m):
            return float((np.abs(a - b)[m] / np.abs(b[m])).max()) if m.any() else 0.0

        out = {}
        for name, d in engines.items():
            b = d.boxes.astype(np.float64)
            out[name] = cls(prob=rel(d.probs.astype(np.float64), p64, pm),
                            obj=rel(d.objectness.astype(np.float64), o64, om),
                            xy=float(np.abs(b[boxes, :2] - b64[boxes, :2]).max()) if boxes.any() else 0.0,
                            wh=rel(b[:, 2:], b64[:, 2:], boxes[:, None] & (b64[:, 2:] != 0)))
        return out

    @classmethod
    def hull(cls, bounds) -> "Bounds":
        bounds = list(bounds)
        return cls(*(max(getattr(b, f) for b in bounds) for f in ("prob", "obj", "xy", "wh")))


# ------------------------------------------------------------------ interval overlap metrics
def _edges(boxes: np.ndarray, b: Bounds):
    """Intervals of the float32 edges left, right, top, bottom: (lo, hi) arrays of shape (N, 4)."""
    x, y, w, h = (boxes[:, k].astype(np.float64) for k in range(4))
    lo, hi = np.empty((len(boxes), 4)), np.empty((len(boxes), 4))
    for k, (c, s) in enumerate(((x, w), (y, h))):
        s_hi = np.abs(s) * (1 + b.wh)
        s_lo = np.abs(s) * (1 - b.wh)
        rnd = 2 * EPS32 * (np.abs(c) + s_hi)  # c - s/2 and c + s/2 rounded to float32
        lo[:, 2 * k] = c - b.xy - s_hi / 2 - rnd      # left / top
        hi[:, 2 * k] = c + b.xy - s_lo / 2 + rnd
        lo[:, 2 * k + 1] = c - b.xy + s_lo / 2 - rnd  # right / bottom
        hi[:, 2 * k + 1] = c + b.xy + s_hi / 2 + rnd
    return lo, hi


def metric_interval(boxes: np.ndarray, b: Bounds, kind: str, beta: float):
    """(lo, hi) (N, N) bounds of upstream's NMS overlap metric between every two boxes whose
    values lie within `b` of `boxes` (float64 centre format), float32 evaluation included."""
    lo, hi = _edges(boxes, b)
    L = lambda k: (lo[:, None, k], lo[None, :, k])
    H = lambda k: (hi[:, None, k], hi[None, :, k])

    def overlap(kl, kr):  # min(r1, r2) - max(l1, l2)
        olo = np.minimum(*L(kr)) - np.maximum(*H(kl))
        ohi = np.minimum(*H(kr)) - np.maximum(*L(kl))
        rnd = EPS32 * (np.abs(np.minimum(*H(kr))) + np.abs(np.maximum(*H(kl))) + 1e-30)
        return olo - rnd, ohi + rnd

    def span(kl, kr):  # max(r1, r2) - min(l1, l2): the enclosing box
        slo = np.maximum(*L(kr)) - np.minimum(*H(kl))
        shi = np.maximum(*H(kr)) - np.minimum(*L(kl))
        return np.maximum(slo, 0), shi

    owl, owh = overlap(0, 1)
    ohl, ohh = overlap(2, 3)
    none = (owh < 0) | (ohh < 0)  # upstream: no overlap -> intersection 0
    i_lo = np.where(none, 0, np.maximum(owl, 0) * np.maximum(ohl, 0))
    i_hi = np.where(none, 0, np.maximum(owh, 0) * np.maximum(ohh, 0))
    w, h = np.abs(boxes[:, 2].astype(np.float64)), np.abs(boxes[:, 3].astype(np.float64))
    a_lo, a_hi = w * h * (1 - b.wh) ** 2, w * h * (1 + b.wh) ** 2
    a1l, a2l = a_lo[:, None], a_lo[None, :]
    a1h, a2h = a_hi[:, None], a_hi[None, :]
    u_lo = np.maximum(a1l + a2l - i_hi, np.maximum(a1l, a2l)) * (1 - 4 * EPS32)
    u_hi = (a1h + a2h - i_lo) * (1 + 4 * EPS32)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou_lo = np.where((i_lo > 0) & (u_hi > 0), i_lo / u_hi, 0.0)
        iou_hi = np.where(u_lo > 0, np.minimum(i_hi / u_lo, 1.0), np.where(i_hi > 0, np.inf, 0.0))
    if kind in ("default", "cornersnms"):
        return iou_lo - 1e-6, iou_hi + 1e-6
    exponent = 0.6 if kind == "greedynms" else beta
    cwl, cwh = span(0, 1)
    chl, chh = span(2, 3)
    c_lo, c_hi = cwl ** 2 + chl ** 2, cwh ** 2 + chh ** 2
    x, y = boxes[:, 0].astype(np.float64), boxes[:, 1].astype(np.float64)

    def sq(dc, pad):  # bounds of (c1 - c2)^2 with each centre within pad
        dl, dh = dc - 2 * pad, dc + 2 * pad
        return np.where((dl <= 0) & (dh >= 0), 0, np.minimum(dl * dl, dh * dh)), np.maximum(dl * dl, dh * dh)

    pad = b.xy + 2 * EPS32 * np.maximum(np.abs(x).max(), np.abs(y).max())
    dxl, dxh = sq(x[:, None] - x[None, :], pad)
    dyl, dyh = sq(y[:, None] - y[None, :], pad)
    d_lo, d_hi = dxl + dyl, dxh + dyh
    with np.errstate(divide="ignore", invalid="ignore"):
        t_lo = np.where(c_hi > 0, (d_lo / c_hi) ** exponent, 0.0)
        t_hi = np.where(c_lo > 0, (d_hi / c_lo) ** exponent, np.inf)
    t_lo = np.where(c_lo > 0, t_lo, 0.0)  # c == 0: upstream returns the plain iou
    return iou_lo - t_hi - 1e-6, iou_hi - t_lo + 1e-6


# ------------------------------------------------------------------ three-valued NMS
@dataclass
class Outcome:
    """Per box and class: `sure` certainly printed, `maybe` possibly printed (sure implies maybe)."""
    sure: np.ndarray   # (N, C) bool
    maybe: np.ndarray  # (N, C) bool

    @property
    def boxes_sure(self) -> np.ndarray:
        return self.sure.any(1)

    @property
    def boxes_maybe(self) -> np.ndarray:
        return self.maybe.any(1)

    @property
    def undecided(self) -> int:
        return int((self.boxes_maybe & ~self.boxes_sure).sum() + (self.boxes_sure & (self.maybe & ~self.sure).any(1)).sum())


def nms_three_valued(ref: Detections, b: Bounds, thresh: float, nms: float, kind, beta: float) -> Outcome:
    """Upstream's get_network_boxes threshold and per-class NMS on `ref` (every box of the
    network, unthresholded, float64 forward) with each decision undecided where the values
    within `b` can fall either way."""
    kind = _nms_kind(kind)
    p = ref.probs.astype(np.float64)
    o = ref.objectness.astype(np.float64)
    p_lo, p_hi = p * (1 - b.prob), p * (1 + b.prob)
    o_lo, o_hi = o * (1 - b.obj), o * (1 + b.obj)
    # present (objectness > thresh) and prob > thresh: a box with prob 0 neither suppresses nor prints
    act_sure = (o_lo > thresh)[:, None] & (p_lo > thresh)
    act_maybe = (o_hi > thresh)[:, None] & (p_hi > thresh)
    sure = np.zeros_like(act_sure)
    maybe = act_maybe.copy()
    cand = np.flatnonzero(act_maybe.any(1))
    if cand.size == 0:
        return Outcome(sure, maybe)
    m_lo, m_hi = metric_interval(ref.boxes[cand].astype(np.float64), b, kind, beta)
    ov_sure, ov_maybe = m_lo > nms, m_hi > nms
    np.fill_diagonal(ov_sure, False)
    np.fill_diagonal(ov_maybe, False)
    for k in range(p.shape[1]):
        idx = np.flatnonzero(act_maybe[cand, k])
        if idx.size == 0:
            continue
        g = cand[idx]
        lo, hi = p_lo[g, k], p_hi[g, k]
        before_sure = lo[:, None] > hi[None, :]       # [i, j]: i sorts before j whatever the rounding
        before_maybe = ~(hi[:, None] < lo[None, :])   # ... or may (ties within the bounds)
        np.fill_diagonal(before_maybe, False)
        sup_sure_m = before_sure & ov_sure[np.ix_(idx, idx)]
        sup_maybe_m = before_maybe & ov_maybe[np.ix_(idx, idx)]
        a_sure, a_maybe = act_sure[g, k], act_maybe[g, k]
        ks, km = np.zeros(idx.size, bool), a_maybe.copy()
        while True:  # Kleene fixpoint from "unknown": ks only grows, km only shrinks
            sup_sure = (sup_sure_m & ks[:, None]).any(0)
            sup_maybe = (sup_maybe_m & km[:, None]).any(0)
            ks2, km2 = a_sure & ~sup_maybe, a_maybe & ~sup_sure
            if np.array_equal(ks2, ks) and np.array_equal(km2, km):
                break
            ks, km = ks2, km2
        sure[g, k], maybe[g, k] = ks, km
    return Outcome(sure, maybe)


def check_detections(name: str, printed: dict[int, set[int]], outcome: Outcome) -> None:
    """`printed`: box index -> classes an engine printed. Certain boxes and classes must be
    there, certainly dropped ones must not."""
    for i in np.flatnonzero(outcome.boxes_sure):
        assert i in printed, f"{name}: box {i} is kept whatever the rounding but missing"
    for i, classes in printed.items():
        assert outcome.boxes_maybe[i], f"{name}: box {i} is dropped whatever the rounding but printed"
        want = set(np.flatnonzero(outcome.sure[i]).tolist())
        allowed = set(np.flatnonzero(outcome.maybe[i]).tolist())
        assert want <= classes <= allowed, (f"{name}: box {i} classes {sorted(classes)}; certain {sorted(want)}, "
                                            f"possible {sorted(allowed)}")
