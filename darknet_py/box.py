"""Upstream: src/box.c

Box maths on centre-format boxes ``(..., 4)`` = ``x, y, w, h`` (upstream's ``box``).

Every function broadcasts over the leading dimensions and works on numpy arrays and on
torch tensors alike: only arithmetic plus a handful of elementwise functions picked by
``_lib`` (``minimum``/``maximum``/``where``/``arctan``) are used, so the training loss can
call ``box_ciou`` etc. on tensors.  With float32 numpy input every step is done in float32,
in the same order as upstream, so threshold decisions (``iou > nms``) agree with the C code.
The few places where upstream promotes to double (``pow``, ``atan``, the ``1e-6`` of
CIoU) are noted at the function.

The degenerate-case guards of upstream are kept exactly:

* ``box_iou``: 0 where the intersection or the union is 0 (and 0 where the two boxes do
  not overlap: upstream clamps a negative overlap width/height to an area of 0);
* ``box_giou`` / ``box_diou`` / ``box_ciou``: plain IoU where the enclosing box measure
  ``c`` is 0.

Pairwise versions ``box_*_pairwise(a (M,4), b (N,4)) -> (M,N)`` are provided too.

``dx_box_iou`` (torch): the gradient of an IoU-kind loss with respect to a predicted box, as
upstream's dx_box_iou computes it, which the [yolo] and [Gaussian_yolo] deltas use.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

try:  # torch is optional for the numpy path
    import torch
except ImportError:  # pragma: no cover - torch is a dependency of the project
    torch = None  # type: ignore[assignment]

__all__ = [
    "IOU_LOSS_KINDS",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
    "box_intersection",
    "box_union",
    "box_iou",
    "box_giou",
    "box_diou",
    "box_diounms",
    "box_ciou",
    "box_iou_kind",
    "box_iou_pairwise",
    "box_giou_pairwise",
    "box_diou_pairwise",
    "box_diounms_pairwise",
    "box_ciou_pairwise",
    "box_iou_kind_pairwise",
    "pairwise",
]

# upstream's IOU_LOSS enum, in order: IOU=0, GIOU=1, MSE=2, DIOU=3, CIOU=4
IOU_LOSS_KINDS = ("iou", "giou", "mse", "diou", "ciou")

# math.h's M_PI (the double constant upstream's box.c sees)
_M_PI = math.pi


def _is_torch(x: Any) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


class _NumpyOps:
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)
    arctan = staticmethod(np.arctan)

    @staticmethod
    def where(cond, a, b):
        return np.where(cond, a, b)

    @staticmethod
    def asarray(x):
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float32)
        return x

    @staticmethod
    def stack(xs, axis=-1):
        return np.stack(xs, axis=axis)


class _TorchOps:
    @staticmethod
    def minimum(a, b):
        return torch.minimum(a, b)

    @staticmethod
    def maximum(a, b):
        return torch.maximum(a, b)

    @staticmethod
    def arctan(a):
        return torch.atan(a)

    @staticmethod
    def where(cond, a, b):
        return torch.where(cond, a, b)

    @staticmethod
    def asarray(x):
        if not torch.is_floating_point(x):
            x = x.to(torch.float32)
        return x

    @staticmethod
    def stack(xs, axis=-1):
        return torch.stack(xs, dim=axis)


def _lib(*xs: Any):
    """The elementwise-op namespace for the inputs: torch if any is a tensor, else numpy."""
    return _TorchOps if any(_is_torch(x) for x in xs) else _NumpyOps


def _prep(a: Any, b: Any):
    """Convert both to float arrays of one library (a tensor wins), same dtype."""
    L = _lib(a, b)
    if L is _TorchOps:
        ref = a if _is_torch(a) else b
        if not _is_torch(a):
            a = torch.as_tensor(np.asarray(a), dtype=ref.dtype, device=ref.device)
        if not _is_torch(b):
            b = torch.as_tensor(np.asarray(b), dtype=ref.dtype, device=ref.device)
        a, b = L.asarray(a), L.asarray(b)
        if a.dtype != b.dtype:
            dt = torch.promote_types(a.dtype, b.dtype)
            a, b = a.to(dt), b.to(dt)
    else:
        a, b = L.asarray(a), L.asarray(b)
        if a.dtype != b.dtype:
            dt = np.promote_types(a.dtype, b.dtype)
            a, b = a.astype(dt), b.astype(dt)
    return L, a, b


def _split(b):
    return b[..., 0], b[..., 1], b[..., 2], b[..., 3]


def _const(ref, value):
    """A python scalar as a 0-d value of ref's dtype (keeps numpy float32 maths float32)."""
    if _is_torch(ref):
        return value  # torch keeps the tensor dtype for python scalars
    return ref.dtype.type(value)


def _safe_div(L, num, den):
    """num/den where den != 0, else 0 (without dividing by zero, also for autograd)."""
    zero = den == 0
    one = _const(den, 1)
    return L.where(zero, num * 0, num / L.where(zero, den * 0 + one, den))


# --------------------------------------------------------------------------- formats
def xywh_to_xyxy(b):
    """(x, y, w, h) centre format -> (left, top, right, bottom), upstream's to_tblr order aside."""
    L = _lib(b)
    b = L.asarray(b)
    x, y, w, h = _split(b)
    two = _const(b, 2)
    return L.stack([x - w / two, y - h / two, x + w / two, y + h / two], -1)


def xyxy_to_xywh(b):
    """(left, top, right, bottom) -> (x, y, w, h) centre format."""
    L = _lib(b)
    b = L.asarray(b)
    x1, y1, x2, y2 = _split(b)
    two = _const(b, 2)
    return L.stack([(x1 + x2) / two, (y1 + y2) / two, x2 - x1, y2 - y1], -1)


# --------------------------------------------------------------------------- core parts
def _overlap(L, x1, w1, x2, w2):
    two = _const(x1, 2)
    l1 = x1 - w1 / two
    l2 = x2 - w2 / two
    left = L.maximum(l1, l2)
    r1 = x1 + w1 / two
    r2 = x2 + w2 / two
    right = L.minimum(r1, r2)
    return right - left


def _intersection(L, a, b):
    ax, ay, aw, ah = _split(a)
    bx, by, bw, bh = _split(b)
    w = _overlap(L, ax, aw, bx, bw)
    h = _overlap(L, ay, ah, by, bh)
    area = w * h
    return L.where((w < 0) | (h < 0), area * 0, area)


def _iou_iu(L, a, b):
    i = _intersection(L, a, b)
    u = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - i
    bad = (i == 0) | (u == 0)
    one = _const(u, 1)
    iou = L.where(bad, i * 0, i / L.where(bad, u * 0 + one, u))
    return iou, i, u


def _enclosing(L, a, b):
    """Width and height of upstream's box_c (smallest box holding both)."""
    ax, ay, aw, ah = _split(a)
    bx, by, bw, bh = _split(b)
    two = _const(ax, 2)
    top = L.minimum(ay - ah / two, by - bh / two)
    bot = L.maximum(ay + ah / two, by + bh / two)
    left = L.minimum(ax - aw / two, bx - bw / two)
    right = L.maximum(ax + aw / two, bx + bw / two)
    return right - left, bot - top


def box_intersection(a, b):
    """upstream box_intersection: overlap area, 0 when the boxes do not overlap."""
    L, a, b = _prep(a, b)
    return _intersection(L, a, b)


def box_union(a, b):
    """upstream box_union: a.w*a.h + b.w*b.h - intersection."""
    L, a, b = _prep(a, b)
    return a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - _intersection(L, a, b)


def box_iou(a, b):
    """upstream box_iou: I/U, 0 where I == 0 or U == 0."""
    L, a, b = _prep(a, b)
    return _iou_iu(L, a, b)[0]


def box_giou(a, b):
    """upstream box_giou: iou - (C - U)/C with C the enclosing box area; iou where C == 0."""
    L, a, b = _prep(a, b)
    iou, _, u = _iou_iu(L, a, b)
    cw, ch = _enclosing(L, a, b)
    c = cw * ch
    return L.where(c == 0, iou, iou - _safe_div(L, c - u, c))


def _diou_like(L, a, b, beta):
    iou, _, _ = _iou_iu(L, a, b)
    cw, ch = _enclosing(L, a, b)
    c = cw * cw + ch * ch
    dx = a[..., 0] - b[..., 0]
    dy = a[..., 1] - b[..., 1]
    d = dx * dx + dy * dy
    # upstream: pow(d / c, beta) in double, stored to float
    ratio = _safe_div(L, d, c)
    term = ratio ** beta
    return L.where(c == 0, iou, iou - term)


def box_diou(a, b):
    """upstream box_diou: iou - (d/c)**0.6 (sic: upstream's exponent is 0.6, not 1).

    d is the squared centre distance, c the squared diagonal of the enclosing box;
    iou where c == 0.  This is what GREEDY_NMS (nms_kind=greedynms) thresholds.
    """
    L, a, b = _prep(a, b)
    return _diou_like(L, a, b, 0.6)


def box_diounms(a, b, beta1: float = 0.6):
    """upstream box_diounms: iou - (d/c)**beta1 (used by DIOU_NMS with beta_nms)."""
    L, a, b = _prep(a, b)
    return _diou_like(L, a, b, beta1)


def box_ciou(a, b):
    """upstream box_ciou(a=pred, b=truth), formulas as in box.c.

    d = |centre a - centre b|^2 / c (c: squared diagonal of the enclosing box),
    ar_loss = 4/pi^2 * (atan(b.w/b.h) - atan(a.w/a.h))^2,
    alpha = ar_loss / (1 - iou + ar_loss + 1e-6),
    result = iou - (d + alpha * ar_loss); plain iou where c == 0.
    Upstream does no other epsilon handling (a zero height divides by zero there too).
    Upstream evaluates ar_loss and alpha in double; here they are done in the input's
    dtype (differences of a few float32 ulps).
    """
    L, a, b = _prep(a, b)
    iou, _, _ = _iou_iu(L, a, b)
    cw, ch = _enclosing(L, a, b)
    c = cw * cw + ch * ch
    dx = a[..., 0] - b[..., 0]
    dy = a[..., 1] - b[..., 1]
    u = dx * dx + dy * dy
    d = _safe_div(L, u, c)
    with np.errstate(divide="ignore", invalid="ignore"):  # h == 0: inf/nan as upstream
        ar_gt = b[..., 2] / b[..., 3]
        ar_pred = a[..., 2] / a[..., 3]
        datan = L.arctan(ar_gt) - L.arctan(ar_pred)
        ar_loss = _const(iou, 4.0 / (_M_PI * _M_PI)) * datan * datan
        alpha = ar_loss / (_const(iou, 1) - iou + ar_loss + _const(iou, 0.000001))
        ciou_term = d + alpha * ar_loss
    return L.where(c == 0, iou, iou - ciou_term)


def _kind_index(kind) -> int:
    if isinstance(kind, str):
        k = kind.strip().lower()
        if k not in IOU_LOSS_KINDS:
            raise ValueError(f"unknown IOU_LOSS kind {kind!r}; expected one of {IOU_LOSS_KINDS}")
        return IOU_LOSS_KINDS.index(k)
    k = int(kind)
    if not 0 <= k < len(IOU_LOSS_KINDS):
        raise ValueError(f"unknown IOU_LOSS value {kind!r}")
    return k


def box_iou_kind(a, b, kind="iou"):
    """upstream box_iou_kind: kind is an IOU_LOSS name ('iou', 'giou', 'mse', 'diou',
    'ciou', case-insensitive) or its enum value 0..4; 'mse' falls back to plain IoU as
    upstream's switch does."""
    k = IOU_LOSS_KINDS[_kind_index(kind)]
    if k == "giou":
        return box_giou(a, b)
    if k == "diou":
        return box_diou(a, b)
    if k == "ciou":
        return box_ciou(a, b)
    return box_iou(a, b)


# --------------------------------------------------------------------------- pairwise
def pairwise(fn: Callable, a, b, *args, **kwargs):
    """fn over every pair: a (M,4), b (N,4) -> (M,N) with entry [i,j] = fn(a[i], b[j])."""
    L, a, b = _prep(a, b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[-1] != 4 or b.shape[-1] != 4:
        raise ValueError(f"pairwise needs (M,4) and (N,4) boxes, got {tuple(a.shape)} and {tuple(b.shape)}")
    return fn(a[:, None, :], b[None, :, :], *args, **kwargs)


def box_iou_pairwise(a, b):
    return pairwise(box_iou, a, b)


def box_giou_pairwise(a, b):
    return pairwise(box_giou, a, b)


def box_diou_pairwise(a, b):
    return pairwise(box_diou, a, b)


def box_diounms_pairwise(a, b, beta1: float = 0.6):
    return pairwise(box_diounms, a, b, beta1)


def box_ciou_pairwise(a, b):
    return pairwise(box_ciou, a, b)


def box_iou_kind_pairwise(a, b, kind="iou"):
    return pairwise(box_iou_kind, a, b, kind)


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
